//! Replacement ids. Every resource id and every id in a reference or `fullUrl` is replaced
//! by one drawn from the caller (45 CFR 164.514(c): a re-identification code must not be
//! derived from information about the individual). Only two shapes are accepted, so that an
//! id cannot carry text ("TomVale" is a valid FHIR id): a counter `r1`, `r2`, ... and a
//! random (version 4) UUID in lower-case hex.

/// Longest counter accepted: `r` and up to 19 digits.
const MAX_COUNTER_DIGITS: usize = 19;

/// Whether `id` has one of the two replacement shapes: `r<n>` (n ≥ 1, no leading zero) or a
/// lower-case UUID `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`.
pub fn is_replacement_id(id: &str) -> bool {
    is_counter(id) || is_uuid_v4(id)
}

fn is_counter(id: &str) -> bool {
    id.strip_prefix('r').is_some_and(|n| {
        (1..=MAX_COUNTER_DIGITS).contains(&n.len())
            && !n.starts_with('0')
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Whether `id` is a lower-case version 4 UUID, the only id shape [`crate::check`] accepts
/// (the researcher's client always de-identifies with [`uuid_ids`]).
pub fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hex_ok = groups.iter().all(|g| {
        g.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    let version_ok = groups.get(2).is_some_and(|g| g.starts_with('4'));
    let variant_ok = groups
        .get(3)
        .is_some_and(|g| g.starts_with(['8', '9', 'a', 'b']));
    lengths_ok && hex_ok && version_ok && variant_ok
}

/// Replacement ids `r1`, `r2`, ...: enough where ids need only be consistent within a copy
/// (each call starts again at `r1`, so two copies share no id but also link nothing).
pub fn counter_ids() -> impl FnMut() -> String {
    let mut next = 0u64;
    move || {
        next += 1;
        format!("r{next}")
    }
}

/// Replacement ids as random (version 4) UUIDs from 16 bytes drawn by the caller's `fill`
/// (e.g. from the operating system's generator).
pub fn uuid_ids(mut fill: impl FnMut(&mut [u8; 16])) -> impl FnMut() -> String {
    move || {
        let mut bytes = [0u8; 16];
        fill(&mut bytes);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut id = String::with_capacity(36);
        for (i, byte) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                id.push('-');
            }
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counters_and_v4_uuids_are_replacement_ids() {
        let mut counter = counter_ids();
        assert_eq!((counter(), counter()), ("r1".into(), "r2".into()));
        let mut uuid = uuid_ids(|b| b.fill(0xff));
        let id = uuid();
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_replacement_id(&id) && is_replacement_id("r1"));
        for bad in [
            "r0",
            "r01",
            "r",
            "TomVale",
            "p1",
            "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF",
            "ffffffff-ffff-1fff-bfff-ffffffffffff",
            "ffffffff-ffff-4fff-bfff-fffffffffff",
        ] {
            assert!(!is_replacement_id(bad), "{bad}");
        }
    }
}
