//! `medledger demo`: the oncology scenario of the medledger paper, run against a local
//! network (`medledger network up`) and narrated. Every step is a real `medledger` command,
//! printed as a user would type it, with its real output; the demo fails (exit 1) if any
//! step does not end as the scenario says it must, denials included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use medledger_devnet::{self as network, Layout};
use medledger_proto::v1;
use medledger_sdk::error::ClientError;
use medledger_sdk::wallet::Wallet;
use serde_json::json;

use crate::Output;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    /// Must fail, with this in its message.
    Fails(&'static str),
}

struct Demo {
    layout: Layout,
    exe: PathBuf,
    work: PathBuf,
    steps: usize,
    failures: Vec<String>,
    json: bool,
}

impl Demo {
    fn say(&self, text: &str) {
        if !self.json {
            println!("\n== {text}");
        }
    }

    fn wallet(&self, name: &str) -> PathBuf {
        self.layout.wallets().join(name)
    }

    /// Runs `medledger --wallet <who> args...`; returns its stdout+stderr.
    fn run(&mut self, who: &str, args: &[&str], expect: Expect) -> String {
        self.steps += 1;
        let output = Command::new(&self.exe)
            .arg("--wallet")
            .arg(self.wallet(who))
            .arg("--peer")
            .arg(self.layout.first_peer())
            .arg("--gateway")
            .arg(&self.layout.gateway_listen)
            .args(args)
            .env_remove("MEDLEDGER_WALLET")
            .output();
        let (ok, text) = match output {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            Err(e) => (false, format!("cannot run {}: {e}", self.exe.display())),
        };
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        let verdict = match expect {
            Expect::Ok if ok => None,
            Expect::Ok => Some("expected success".to_string()),
            Expect::Fails(what) if !ok && text.contains(what) => None,
            Expect::Fails(what) => Some(format!("expected a refusal mentioning {what:?}")),
        };
        if !self.json {
            println!("$ medledger --wallet {who} {}", shown.join(" "));
            for line in text.trim_end().lines() {
                println!("    {line}");
            }
            if let Expect::Fails(_) = expect
                && verdict.is_none()
            {
                println!("    ✓ refused, as it must be");
            }
        }
        if let Some(v) = verdict {
            let failure = format!(
                "step {} ({}): {v}; it said: {}",
                self.steps,
                shown.join(" "),
                text.trim()
            );
            if !self.json {
                println!("    ✗ {failure}");
            }
            self.failures.push(failure);
        }
        text
    }

    fn write(&self, name: &str, content: &str) -> String {
        let path = self.work.join(name);
        let _ = std::fs::write(&path, content);
        path.display().to_string()
    }
}

/// The first `word` in `text` after `marker`.
fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    text.split_once(marker)
        .map(|(_, rest)| {
            rest.trim_start()
                .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
                .next()
                .unwrap_or("")
        })
        .unwrap_or("")
}

fn history_and_physical(mrn: &str) -> String {
    json!({
        "resourceType": "Bundle", "type": "document",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "pt-1", "identifier": [{"system": "urn:st-mary:mrn", "value": mrn}],
                "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1968-05-17", "gender": "female",
                "address": [{"line": ["12 Elm Street"], "city": "Springfield", "state": "MA", "postalCode": "01103"}],
                "telecom": [{"system": "phone", "value": "+1 413 555 0142"}]}},
            {"resource": {"resourceType": "Condition", "id": "dx-1", "subject": {"reference": "Patient/pt-1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007", "display": "Non-small cell lung cancer"}]},
                "onsetDateTime": "2026-09-02", "note": [{"text": "Discussed with Jane at home, 413-555-0142."}]}}
        ]
    })
    .to_string()
}

fn lab_result() -> String {
    json!({
        "resourceType": "Observation", "id": "lab-7", "status": "final",
        "identifier": [{"system": "urn:st-mary:lab", "value": "ACC-2026-0917"}],
        "subject": {"reference": "Patient/pt-1", "display": "Jane Doe"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
        "effectiveDateTime": "2026-11-20T08:30:00Z",
        "valueQuantity": {"value": 11.4, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}
    })
    .to_string()
}

/// What a step keeps from its output, under a name later steps use as `{name}`.
#[derive(Clone, Copy)]
enum Keep {
    Nothing,
    /// The whole output, trimmed.
    Output(&'static str),
    /// The first word after a marker (see [`after`]).
    After(&'static str, &'static str),
}

/// One step of the scenario. `{name}` in a step's wallet or arguments is what the cast or an
/// earlier step put under `name`.
enum Step {
    /// A line of narration.
    Say(&'static str),
    /// `medledger --wallet <who> <args>`, which must end as `expect` says.
    Run {
        who: &'static str,
        /// Its arguments, separated by spaces; `'...'` holds one with spaces.
        args: &'static str,
        expect: Expect,
        keep: Keep,
    },
    /// Writes a file into the run's folder and keeps its path under `keep`.
    Write {
        keep: &'static str,
        file: &'static str,
        content: fn(&Vars) -> String,
    },
    /// Waits (for a grant's window to end).
    Wait { seconds: u64 },
    /// A check of what the steps produced; `Err` is a failure of the demo.
    Check(fn(&Vars, bool) -> Result<(), String>),
}

type Vars = std::collections::BTreeMap<&'static str, String>;

const fn ok(who: &'static str, args: &'static str) -> Step {
    Step::Run {
        who,
        args,
        expect: Expect::Ok,
        keep: Keep::Nothing,
    }
}

const fn refused(who: &'static str, args: &'static str, what: &'static str) -> Step {
    Step::Run {
        who,
        args,
        expect: Expect::Fails(what),
        keep: Keep::Nothing,
    }
}

const fn keep(who: &'static str, args: &'static str, keep: Keep) -> Step {
    Step::Run {
        who,
        args,
        expect: Expect::Ok,
        keep,
    }
}

const READ_LAB: &str = "clinician download --patient {pseudonym} --item {lab_item} -o {lab_copy}";

/// The oncology scenario, in order. The cast ({p} the patient, {o} the oncologist, {r} the
/// radiation oncologist, {e} the emergency physician, {res} the researcher) is enrolled
/// before it runs.
const SCENARIO: &[Step] = &[
    Step::Say(
        "Jane creates her record: keys for three categories stay in her wallet; only a pseudonym reaches the ledger.",
    ),
    ok(
        "{p}",
        "patient init --uii {mrn} --category history-and-physical --category lab-results --category radiation-doses",
    ),
    keep("{p}", "patient pseudonym", Keep::Output("pseudonym")),
    Step::Say(
        "Jane grants her oncologist read and write on two categories for 30 days, and the radiation oncologist write-only on radiation doses.",
    ),
    keep(
        "{p}",
        "patient grant --to {o} --category history-and-physical --rights read,write --days 30",
        Keep::After("onc_hp_permission", "(permission"),
    ),
    ok(
        "{p}",
        "patient grant --to {o} --category lab-results --rights read,write --days 30",
    ),
    ok(
        "{p}",
        "patient grant --to {r} --category radiation-doses --rights write --days 30",
    ),
    Step::Say(
        "Uploads: each file is encrypted on the clinician's machine; the gateway and the store see ciphertext, the ledger its hash.",
    ),
    Step::Write {
        keep: "hp_file",
        file: "history-and-physical.json",
        content: |v| history_and_physical(&v["mrn"]),
    },
    keep(
        "{o}",
        "clinician upload --patient {pseudonym} --category history-and-physical {hp_file}",
        Keep::After("hp_item", "as item"),
    ),
    Step::Write {
        keep: "lab_file",
        file: "hemoglobin.json",
        content: |_| lab_result(),
    },
    keep(
        "{o}",
        "clinician upload --patient {pseudonym} --category lab-results {lab_file}",
        Keep::After("lab_item", "as item"),
    ),
    Step::Write {
        keep: "scan_file",
        file: "pathology-scan.pdf",
        content: |_| "%PDF-1.7 scanned pathology report (binary)".into(),
    },
    keep(
        "{o}",
        "clinician upload --patient {pseudonym} --category lab-results {scan_file}",
        Keep::After("scan_item", "as item"),
    ),
    Step::Write {
        keep: "dose_file",
        file: "dose-plan.json",
        content: |_| {
            r#"{"resourceType":"Procedure","status":"in-progress","code":{"text":"IMRT 60 Gy in 30 fractions"}}"#.into()
        },
    },
    ok(
        "{r}",
        "clinician upload --patient {pseudonym} --category radiation-doses {dose_file}",
    ),
    Step::Say(
        "The radiation oncologist tries to read the lab result: no read grant, so the ledger refuses, and records the attempt.",
    ),
    refused("{r}", READ_LAB, "no permission to read lab-results"),
    Step::Say(
        "Jane grants it read on lab results for 20 seconds; now the read works, and is recorded too.",
    ),
    ok(
        "{p}",
        "patient grant --to {r} --category lab-results --rights read --seconds 20",
    ),
    ok("{r}", READ_LAB),
    Step::Check(|v, _| {
        if std::fs::read_to_string(&v["lab_copy"]).ok() == Some(lab_result()) {
            Ok(())
        } else {
            Err("the downloaded lab result differs from the upload".into())
        }
    }),
    Step::Say("Jane reads her audit trail: every grant, upload and read, and the refused attempt."),
    ok("{p}", "patient audit"),
    Step::Say(
        "Jane revokes the oncologist's history-and-physical permission; from that block on it opens nothing.",
    ),
    ok("{p}", "patient revoke --permission {onc_hp_permission}"),
    refused(
        "{o}",
        "clinician download --patient {pseudonym} --item {hp_item} -o {hp_copy}",
        "revoked",
    ),
    Step::Say(
        "The radiation oncologist's 20-second window ends; consensus time decides, not the client's clock.",
    ),
    Step::Wait { seconds: 21 },
    refused("{r}", READ_LAB, "window has ended"),
    Step::Say(
        "Emergency: the oncologist (no emergency attribute) is refused; the emergency physician breaks the glass, flagged on Jane's trail.",
    ),
    refused(
        "{o}",
        "clinician emergency --patient {pseudonym} --category radiation-doses --reason 'unconscious in ER'",
        "emergency=true",
    ),
    ok(
        "{e}",
        "clinician emergency --patient {pseudonym} --category radiation-doses --reason 'unconscious in ER, prior radiation unknown' --minutes 60",
    ),
    ok("{e}", "clinician items --patient {pseudonym}"),
    Step::Say(
        "Research: the researcher registers a study; Jane lets her oncologist share lab results into it, de-identified.",
    ),
    ok(
        "{res}",
        "researcher study create --id {study} --title 'NSCLC outcomes under IMRT'",
    ),
    ok(
        "{p}",
        "patient grant --to {o} --category lab-results --rights share --study {study} --anonymize --days 30",
    ),
    ok(
        "{o}",
        "clinician share --patient {pseudonym} --study {study} --item {lab_item}",
    ),
    Step::Say(
        "A scanned PDF cannot be de-identified, so it cannot be shared into a study that requires it.",
    ),
    refused(
        "{o}",
        "clinician share --patient {pseudonym} --study {study} --item {scan_item}",
        "cannot be shared anonymized",
    ),
    ok(
        "{res}",
        "researcher study fetch --study {study} -o {study_data}",
    ),
    Step::Check(|v, json| {
        let fetched: String = std::fs::read_dir(&v["study_data"])
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !json {
            println!("    the researcher's copy: {}", fetched.replace('\n', " "));
        }
        let identified = ["Jane", "ACC-2026-0917"]
            .iter()
            .any(|id| fetched.contains(id));
        if fetched.is_empty() || identified || !fetched.contains("718-7") {
            Err("the study copy is missing or not de-identified".into())
        } else {
            Ok(())
        }
    }),
    Step::Say(
        "Jane's trail now shows the emergency access, the share and the researcher's fetch. The physician's reason reached the ledger sealed to Jane and the auditor: only they read it.",
    ),
    keep("{p}", "patient audit", Keep::Output("trail")),
    keep("auditor", "ledger emergencies", Keep::Output("emergencies")),
    Step::Check(|v, _| {
        let reason = "unconscious in ER, prior radiation unknown";
        for (who, seen) in [
            ("Jane's trail", "trail"),
            ("the auditor's review", "emergencies"),
        ] {
            if !v.get(seen).is_some_and(|text| text.contains(reason)) {
                return Err(format!("{who} does not show the emergency reason"));
            }
        }
        Ok(())
    }),
    Step::Say(
        "Jane erases her record: keys and items tombstoned on the ledger, every object deleted, including the study copy.",
    ),
    ok("{p}", "patient erase --yes"),
    refused("{o}", "clinician items --patient {pseudonym}", "erased"),
    Step::Say("An auditor verifies the whole ledger and every stored object against it."),
    ok("auditor", "ledger verify --dir {network_dir}"),
];

/// A step's arguments: words separated by spaces, `'...'` one word with spaces.
fn words(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = args.trim_start();
    while !rest.is_empty() {
        let (word, tail) = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split_once('\'').unwrap_or((quoted, "")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        out.push(word.to_string());
        rest = tail.trim_start();
    }
    out
}

/// `text` with every `{name}` replaced by what `vars` holds under `name`.
fn fill(text: &str, vars: &Vars) -> String {
    let mut out = text.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

impl Demo {
    async fn step(&mut self, step: &Step, vars: &mut Vars) {
        match step {
            Step::Say(text) => self.say(text),
            Step::Run {
                who,
                args,
                expect,
                keep,
            } => {
                let who = fill(who, vars);
                let args: Vec<String> = words(args).iter().map(|a| fill(a, vars)).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let text = self.run(&who, &args, *expect);
                match keep {
                    Keep::Nothing => {}
                    Keep::Output(name) => {
                        vars.insert(name, text.trim().to_string());
                    }
                    Keep::After(name, marker) => {
                        vars.insert(name, after(&text, marker).to_string());
                    }
                }
            }
            Step::Write {
                keep,
                file,
                content,
            } => {
                let path = self.write(file, &content(vars));
                vars.insert(keep, path);
            }
            Step::Wait { seconds } => {
                if !self.json {
                    println!("    (waiting {seconds} s)");
                }
                tokio::time::sleep(Duration::from_secs(*seconds)).await;
            }
            Step::Check(check) => {
                if let Err(failure) = check(vars, self.json) {
                    self.failures.push(failure);
                }
            }
        }
    }
}

/// Runs [`SCENARIO`] against the network under `dir` with a fresh cast.
pub async fn run(json_output: bool, dir: &Path) -> Result<Output, ClientError> {
    let layout = Layout::read(dir)?;
    let components = network::status(&layout).await;
    if let Some(down) = components.iter().find(|c| !c.running) {
        return Err(ClientError::Network(format!(
            "{} is not running; start the network first: medledger network up --detach",
            down.name
        )));
    }
    let admin = Wallet::open(&layout.admin_wallet())?;
    let run_id = format!(
        "{:04x}",
        rand_core::RngCore::next_u32(&mut rand_core::OsRng) & 0xffff
    );
    let work = layout.dir.join(format!("demo-{run_id}"));
    std::fs::create_dir_all(&work).map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut demo = Demo {
        exe: std::env::current_exe().map_err(|e| ClientError::Usage(e.to_string()))?,
        layout: layout.clone(),
        work: work.clone(),
        steps: 0,
        failures: Vec::new(),
        json: json_output,
    };
    let in_work = |name: &str| work.join(name).display().to_string();
    let mut vars = Vars::from([
        ("p", format!("jane-{run_id}")),
        ("o", format!("dr-okafor-{run_id}")),
        ("r", format!("dr-lindqvist-{run_id}")),
        ("e", format!("dr-reyes-{run_id}")),
        ("res", format!("prof-tanaka-{run_id}")),
        ("study", format!("nsclc-outcomes-{run_id}")),
        ("mrn", format!("MRN-{run_id}")),
        ("lab_copy", in_work("lab-copy.json")),
        ("hp_copy", in_work("hp-copy.json")),
        ("study_data", in_work("study-data")),
        ("network_dir", layout.dir.display().to_string()),
    ]);

    vars.insert("run", run_id.clone());
    demo.say(&fill(
        "The cast (run {run}): patient {p}; oncologist {o} at St Mary's; radiation \
         oncologist {r} at City General; emergency physician {e}; researcher {res}. The \
         administrator registers them; each enrolls with keys made on their own machine.",
        &vars,
    ));
    let attr = |k: &str, v: &str| v1::Attribute {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    };
    let cast = [
        ("p", "patient", vec![]),
        ("o", "clinician", vec![attr("hospital", "st-marys")]),
        ("r", "clinician", vec![attr("hospital", "city-general")]),
        (
            "e",
            "clinician",
            vec![attr("hospital", "st-marys"), attr("emergency", "true")],
        ),
        (
            "res",
            "researcher",
            vec![attr("institution", "state-university")],
        ),
    ];
    for (who, role, attributes) in cast {
        let name = &vars[who];
        network::ensure_identity(&layout, &admin, name, role, attributes).await?;
        if !json_output {
            println!(
                "    enrolled {name} ({role}): wallet {}",
                demo.wallet(name).display()
            );
        }
    }

    for step in SCENARIO {
        demo.step(step, &mut vars).await;
    }

    let json = json!({
        "run": run_id, "steps": demo.steps, "failures": demo.failures,
        "patient": vars["p"], "pseudonym": vars.get("pseudonym"), "study": vars["study"],
        "work_dir": work,
    });
    if demo.failures.is_empty() {
        Ok(Output {
            text: format!(
                "\nThe scenario ran as it must: {} steps, every refusal where one belongs. Files in {}.",
                demo.steps,
                work.display()
            ),
            json,
        })
    } else {
        Err(ClientError::Network(format!(
            "the demo did not go as it must: {}",
            demo.failures.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_keep_quoted_ones_whole() {
        assert_eq!(
            words("clinician emergency --reason 'unconscious in ER' --minutes 60"),
            [
                "clinician",
                "emergency",
                "--reason",
                "unconscious in ER",
                "--minutes",
                "60"
            ]
        );
        assert_eq!(words("  a   b "), ["a", "b"]);
        assert!(words("").is_empty());
    }

    /// Every `{name}` a step uses was set by the cast or kept by an earlier step: a typo in
    /// the table fails here, not halfway through a demo.
    #[test]
    fn every_name_a_step_uses_is_kept_before_it() {
        let mut known: Vec<&str> = vec![
            "p",
            "o",
            "r",
            "e",
            "res",
            "study",
            "mrn",
            "lab_copy",
            "hp_copy",
            "study_data",
            "network_dir",
            "run",
        ];
        let used = |text: &str| -> Vec<String> {
            text.split('{')
                .skip(1)
                .filter_map(|t| t.split_once('}').map(|(name, _)| name.to_string()))
                .collect()
        };
        for (i, step) in SCENARIO.iter().enumerate() {
            match step {
                Step::Run {
                    who, args, keep, ..
                } => {
                    for name in used(who).into_iter().chain(used(args)) {
                        assert!(
                            known.contains(&name.as_str()),
                            "step {i} uses {{{name}}} before it is kept"
                        );
                    }
                    match keep {
                        Keep::Nothing => {}
                        Keep::Output(name) | Keep::After(name, _) => known.push(name),
                    }
                }
                Step::Write { keep, .. } => known.push(keep),
                Step::Say(_) | Step::Wait { .. } | Step::Check(_) => {}
            }
        }
    }
}
