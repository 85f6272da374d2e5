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
    let patient = format!("jane-{run_id}");
    let onc = format!("dr-okafor-{run_id}");
    let rad = format!("dr-lindqvist-{run_id}");
    let er = format!("dr-reyes-{run_id}");
    let researcher = format!("prof-tanaka-{run_id}");
    let study = format!("nsclc-outcomes-{run_id}");
    let (p, o, r, e, res) = (
        patient.as_str(),
        onc.as_str(),
        rad.as_str(),
        er.as_str(),
        researcher.as_str(),
    );

    demo.say(&format!(
        "The cast (run {run_id}): patient {p}; oncologist {o} at St Mary's; radiation \
         oncologist {r} at City General; emergency physician {e}; researcher {res}. The \
         administrator registers them; each enrolls with keys made on their own machine."
    ));
    let attr = |k: &str, v: &str| v1::Attribute {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    };
    for (name, role, attributes) in [
        (p, "patient", vec![]),
        (o, "clinician", vec![attr("hospital", "st-marys")]),
        (r, "clinician", vec![attr("hospital", "city-general")]),
        (
            e,
            "clinician",
            vec![attr("hospital", "st-marys"), attr("emergency", "true")],
        ),
        (
            res,
            "researcher",
            vec![attr("institution", "state-university")],
        ),
    ] {
        network::ensure_identity(&layout, &admin, name, role, attributes).await?;
        if !json_output {
            println!(
                "    enrolled {name} ({role}): wallet {}",
                demo.wallet(name).display()
            );
        }
    }

    demo.say("Jane creates her record: keys for three categories stay in her wallet; only a pseudonym reaches the ledger.");
    let mrn = format!("MRN-{run_id}");
    demo.run(
        p,
        &[
            "patient",
            "init",
            "--uii",
            &mrn,
            "--category",
            "history-and-physical",
            "--category",
            "lab-results",
            "--category",
            "radiation-doses",
        ],
        Expect::Ok,
    );
    let pseudonym = demo
        .run(p, &["patient", "pseudonym"], Expect::Ok)
        .trim()
        .to_string();

    demo.say("Jane grants her oncologist read and write on two categories for 30 days, and the radiation oncologist write-only on radiation doses.");
    let onc_hp = demo.run(
        p,
        &[
            "patient",
            "grant",
            "--to",
            o,
            "--category",
            "history-and-physical",
            "--rights",
            "read,write",
            "--days",
            "30",
        ],
        Expect::Ok,
    );
    let onc_hp_permission = after(&onc_hp, "(permission").to_string();
    demo.run(
        p,
        &[
            "patient",
            "grant",
            "--to",
            o,
            "--category",
            "lab-results",
            "--rights",
            "read,write",
            "--days",
            "30",
        ],
        Expect::Ok,
    );
    demo.run(
        p,
        &[
            "patient",
            "grant",
            "--to",
            r,
            "--category",
            "radiation-doses",
            "--rights",
            "write",
            "--days",
            "30",
        ],
        Expect::Ok,
    );

    demo.say("Uploads: each file is encrypted on the clinician's machine; the gateway and the store see ciphertext, the ledger its hash.");
    let hp_file = demo.write("history-and-physical.json", &history_and_physical(&mrn));
    let hp = demo.run(
        o,
        &[
            "clinician",
            "upload",
            "--patient",
            &pseudonym,
            "--category",
            "history-and-physical",
            &hp_file,
        ],
        Expect::Ok,
    );
    let hp_item = after(&hp, "as item").to_string();
    let lab_file = demo.write("hemoglobin.json", &lab_result());
    let lab = demo.run(
        o,
        &[
            "clinician",
            "upload",
            "--patient",
            &pseudonym,
            "--category",
            "lab-results",
            &lab_file,
        ],
        Expect::Ok,
    );
    let lab_item = after(&lab, "as item").to_string();
    let scan_file = demo.write(
        "pathology-scan.pdf",
        "%PDF-1.7 scanned pathology report (binary)",
    );
    let scan = demo.run(
        o,
        &[
            "clinician",
            "upload",
            "--patient",
            &pseudonym,
            "--category",
            "lab-results",
            &scan_file,
        ],
        Expect::Ok,
    );
    let scan_item = after(&scan, "as item").to_string();
    let dose_file = demo.write("dose-plan.json", r#"{"resourceType":"Procedure","status":"in-progress","code":{"text":"IMRT 60 Gy in 30 fractions"}}"#);
    demo.run(
        r,
        &[
            "clinician",
            "upload",
            "--patient",
            &pseudonym,
            "--category",
            "radiation-doses",
            &dose_file,
        ],
        Expect::Ok,
    );

    demo.say("The radiation oncologist tries to read the lab result: no read grant, so the ledger refuses, and records the attempt.");
    let lab_copy = work.join("lab-copy.json").display().to_string();
    let read_lab = [
        "clinician",
        "download",
        "--patient",
        pseudonym.as_str(),
        "--item",
        lab_item.as_str(),
        "-o",
        lab_copy.as_str(),
    ];
    demo.run(
        r,
        &read_lab,
        Expect::Fails("no permission to read lab-results"),
    );

    demo.say("Jane grants it read on lab results for 20 seconds; now the read works, and is recorded too.");
    demo.run(
        p,
        &[
            "patient",
            "grant",
            "--to",
            r,
            "--category",
            "lab-results",
            "--rights",
            "read",
            "--seconds",
            "20",
        ],
        Expect::Ok,
    );
    demo.run(r, &read_lab, Expect::Ok);
    if std::fs::read_to_string(&lab_copy).ok() != Some(lab_result()) {
        demo.failures
            .push("the downloaded lab result differs from the upload".into());
    }

    demo.say("Jane reads her audit trail: every grant, upload and read, and the refused attempt.");
    demo.run(p, &["patient", "audit"], Expect::Ok);

    demo.say("Jane revokes the oncologist's history-and-physical permission; from that block on it opens nothing.");
    demo.run(
        p,
        &["patient", "revoke", "--permission", &onc_hp_permission],
        Expect::Ok,
    );
    let hp_copy = work.join("hp-copy.json").display().to_string();
    demo.run(
        o,
        &[
            "clinician",
            "download",
            "--patient",
            &pseudonym,
            "--item",
            &hp_item,
            "-o",
            &hp_copy,
        ],
        Expect::Fails("revoked"),
    );

    demo.say("The radiation oncologist's 20-second window ends; consensus time decides, not the client's clock.");
    if !json_output {
        println!("    (waiting 21 s)");
    }
    tokio::time::sleep(Duration::from_secs(21)).await;
    demo.run(r, &read_lab, Expect::Fails("window has ended"));

    demo.say("Emergency: the oncologist (no emergency attribute) is refused; the emergency physician breaks the glass, flagged on Jane's trail.");
    demo.run(
        o,
        &[
            "clinician",
            "emergency",
            "--patient",
            &pseudonym,
            "--category",
            "radiation-doses",
            "--reason",
            "unconscious in ER",
        ],
        Expect::Fails("emergency=true"),
    );
    demo.run(
        e,
        &[
            "clinician",
            "emergency",
            "--patient",
            &pseudonym,
            "--category",
            "radiation-doses",
            "--reason",
            "unconscious in ER, prior radiation unknown",
            "--minutes",
            "60",
        ],
        Expect::Ok,
    );
    demo.run(
        e,
        &["clinician", "items", "--patient", &pseudonym],
        Expect::Ok,
    );

    demo.say("Research: the researcher registers a study; Jane lets her oncologist share lab results into it, de-identified.");
    demo.run(
        res,
        &[
            "researcher",
            "study",
            "create",
            "--id",
            &study,
            "--title",
            "NSCLC outcomes under IMRT",
        ],
        Expect::Ok,
    );
    demo.run(
        p,
        &[
            "patient",
            "grant",
            "--to",
            o,
            "--category",
            "lab-results",
            "--rights",
            "share",
            "--study",
            &study,
            "--anonymize",
            "--days",
            "30",
        ],
        Expect::Ok,
    );
    demo.run(
        o,
        &[
            "clinician",
            "share",
            "--patient",
            &pseudonym,
            "--study",
            &study,
            "--item",
            &lab_item,
        ],
        Expect::Ok,
    );
    demo.say("A scanned PDF cannot be de-identified, so it cannot be shared into a study that requires it.");
    demo.run(
        o,
        &[
            "clinician",
            "share",
            "--patient",
            &pseudonym,
            "--study",
            &study,
            "--item",
            &scan_item,
        ],
        Expect::Fails("cannot be shared anonymized"),
    );
    let fetched_dir = work.join("study-data").display().to_string();
    demo.run(
        res,
        &[
            "researcher",
            "study",
            "fetch",
            "--study",
            &study,
            "-o",
            &fetched_dir,
        ],
        Expect::Ok,
    );
    let fetched: String = std::fs::read_dir(&fetched_dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if !json_output {
        println!("    the researcher's copy: {}", fetched.replace('\n', " "));
    }
    if fetched.is_empty()
        || fetched.contains("Jane")
        || fetched.contains("ACC-2026-0917")
        || !fetched.contains("718-7")
    {
        demo.failures
            .push("the study copy is missing or not de-identified".into());
    }

    demo.say("Jane's trail now shows the emergency access, the share and the researcher's fetch.");
    demo.run(p, &["patient", "audit"], Expect::Ok);

    demo.say("Jane erases her record: keys and items tombstoned on the ledger, every object deleted, including the study copy.");
    demo.run(p, &["patient", "erase", "--yes"], Expect::Ok);
    demo.run(
        o,
        &["clinician", "items", "--patient", &pseudonym],
        Expect::Fails("erased"),
    );

    demo.say("An auditor verifies the whole ledger and every stored object against it.");
    let network_dir = layout.dir.display().to_string();
    demo.run(
        "admin",
        &["ledger", "verify", "--dir", &network_dir],
        Expect::Ok,
    );

    let json = json!({
        "run": run_id, "steps": demo.steps, "failures": demo.failures,
        "patient": p, "pseudonym": pseudonym, "study": study, "work_dir": work,
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
