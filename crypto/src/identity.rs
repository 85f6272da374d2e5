//! Who a certificate holder is: a role, a name and attributes, each attribute optionally valid
//! only within a time window. These rules are enforced by the CA at registration and again
//! whenever an enrollment extension is decoded, so a malformed identity never gets in.

use std::fmt;
use std::str::FromStr;

/// Longest identity name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most attributes one identity may carry.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 256;
/// Latest time an attribute window may name: 9999-12-31T23:59:59Z, the last instant an X.509
/// GeneralizedTime can carry. Windows start no earlier than the Unix epoch.
pub const MAX_WINDOW_TIME: i64 = 253_402_300_799;

/// Why a name, role or attribute was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "unknown role {0:?}: expected one of admin, peer, clinician, patient, researcher, auditor"
    )]
    UnknownRole(String),
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("invalid attribute {attribute:?}: {why}")]
    InvalidAttribute { attribute: String, why: String },
    #[error("too many attributes: {0} (at most {MAX_ATTRIBUTES})")]
    TooManyAttributes(usize),
}

/// The role an enrollment certificate grants. Fixed at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Peer,
    Clinician,
    Patient,
    Researcher,
    Auditor,
    /// The storage gateway: serves clients over TLS, forwards their signed transactions.
    Gateway,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Peer,
        Role::Clinician,
        Role::Patient,
        Role::Researcher,
        Role::Auditor,
        Role::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Peer => "peer",
            Role::Clinician => "clinician",
            Role::Patient => "patient",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(truncate_for_error(s)))
    }
}

/// Checks an identity name: 1–64 bytes of ASCII letters, digits and `.`, `-`, `_`, `@`,
/// starting with a letter or digit. Names become certificate subjects and wallet folder
/// names, so nothing that could be a path, a control character or a look-alike is allowed.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let invalid = |why| IdentityError::InvalidName {
        name: truncate_for_error(name),
        why,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("longer than 64 bytes"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid("must start with a letter or a digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
    {
        return Err(invalid(
            "may contain only ASCII letters, digits and . - _ @",
        ));
    }
    Ok(())
}

/// When an attribute holds: `not_before ≤ t < not_after`, either bound optional.
/// Times are Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttributeWindow {
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
}

impl AttributeWindow {
    pub const ALWAYS: AttributeWindow = AttributeWindow {
        not_before: None,
        not_after: None,
    };

    pub fn contains(&self, unix_time: i64) -> bool {
        self.not_before.is_none_or(|from| from <= unix_time)
            && self.not_after.is_none_or(|until| unix_time < until)
    }
}

/// A `key=value` attribute of an identity, e.g. `emergency=true` or `license=NPI-1234567890`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub key: String,
    pub value: String,
    pub window: AttributeWindow,
}

impl Attribute {
    /// Builds and validates an attribute.
    pub fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        window: AttributeWindow,
    ) -> Result<Self, IdentityError> {
        let attribute = Attribute {
            key: key.into(),
            value: value.into(),
            window,
        };
        attribute.validate()?;
        Ok(attribute)
    }

    /// Is this attribute in force at `unix_time`?
    pub fn holds_at(&self, unix_time: i64) -> bool {
        self.window.contains(unix_time)
    }

    /// Keys: 1–64 bytes of lowercase ASCII letters, digits, `_`, `-`, `.`, starting with a
    /// letter. Values: 1–256 bytes of UTF-8 without control characters. Windows: non-empty.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let invalid = |why: &str| IdentityError::InvalidAttribute {
            attribute: truncate_for_error(&self.key),
            why: why.to_string(),
        };
        let key = self.key.as_bytes();
        if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY_LEN {
            return Err(invalid("the key must be 1 to 64 bytes"));
        }
        if !key[0].is_ascii_lowercase()
            || !key.iter().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
            })
        {
            return Err(invalid(
                "the key must start with a lowercase letter and contain only a-z, 0-9, _ - .",
            ));
        }
        if self.value.is_empty() || self.value.len() > MAX_ATTRIBUTE_VALUE_LEN {
            return Err(invalid("the value must be 1 to 256 bytes"));
        }
        if self.value.chars().any(char::is_control) {
            return Err(invalid("the value must not contain control characters"));
        }
        let in_range = |t: Option<i64>| t.is_none_or(|t| (0..=MAX_WINDOW_TIME).contains(&t));
        if !in_range(self.window.not_before) || !in_range(self.window.not_after) {
            return Err(invalid(
                "window times must lie between 1970 and the end of 9999",
            ));
        }
        if let (Some(from), Some(until)) = (self.window.not_before, self.window.not_after)
            && from >= until
        {
            return Err(invalid(
                "the validity window is empty (from must be before until)",
            ));
        }
        Ok(())
    }

    /// Validates a whole attribute list: each attribute, the count, and unique keys.
    pub fn validate_list(attributes: &[Attribute]) -> Result<(), IdentityError> {
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(IdentityError::TooManyAttributes(attributes.len()));
        }
        for (i, attribute) in attributes.iter().enumerate() {
            attribute.validate()?;
            if attributes[..i].iter().any(|a| a.key == attribute.key) {
                return Err(IdentityError::InvalidAttribute {
                    attribute: attribute.key.clone(),
                    why: "the key appears more than once".into(),
                });
            }
        }
        Ok(())
    }
}

/// Error messages quote what was refused, but never more than a short, printable prefix.
fn truncate_for_error(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!(matches!(
            "superuser".parse::<Role>(),
            Err(IdentityError::UnknownRole(_))
        ));
        assert!("Admin".parse::<Role>().is_err(), "roles are case-sensitive");
    }

    #[test]
    fn names_are_restricted() {
        for ok in [
            "admin",
            "dr.alice@stmary",
            "peer-0",
            "a",
            "1x",
            &"n".repeat(64),
        ] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            &"n".repeat(65),
            "../etc",
            "-dash",
            "has space",
            "tab\tname",
            "new\nline",
            "slash/name",
            "émile",
            ".hidden",
        ] {
            assert!(
                matches!(validate_name(bad), Err(IdentityError::InvalidName { .. })),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn attributes_are_validated() {
        Attribute::new("emergency", "true", AttributeWindow::ALWAYS).unwrap();
        Attribute::new("license", "NPI-1234567890", AttributeWindow::ALWAYS).unwrap();
        let refused = [
            ("", "v"),
            ("Upper", "v"),
            ("1digit", "v"),
            ("key", ""),
            ("key", "bell\u{7}"),
            ("key", "line\nbreak"),
        ];
        for (key, value) in refused {
            assert!(
                Attribute::new(key, value, AttributeWindow::ALWAYS).is_err(),
                "{key:?}={value:?} must be refused"
            );
        }
        assert!(Attribute::new("k".repeat(65), "v", AttributeWindow::ALWAYS).is_err());
        assert!(Attribute::new("k", "v".repeat(257), AttributeWindow::ALWAYS).is_err());
        let empty_window = AttributeWindow {
            not_before: Some(10),
            not_after: Some(10),
        };
        assert!(Attribute::new("k", "v", empty_window).is_err());
    }

    #[test]
    fn attribute_lists_have_unique_keys_and_a_limit() {
        let a = Attribute::new("a", "1", AttributeWindow::ALWAYS).unwrap();
        assert!(Attribute::validate_list(&[a.clone(), a.clone()]).is_err());
        let many: Vec<_> = (0..=MAX_ATTRIBUTES)
            .map(|i| Attribute::new(format!("k{i}"), "v", AttributeWindow::ALWAYS).unwrap())
            .collect();
        assert_eq!(
            Attribute::validate_list(&many),
            Err(IdentityError::TooManyAttributes(MAX_ATTRIBUTES + 1))
        );
        Attribute::validate_list(&many[..MAX_ATTRIBUTES]).unwrap();
    }

    #[test]
    fn windows_are_half_open() {
        let window = AttributeWindow {
            not_before: Some(100),
            not_after: Some(200),
        };
        assert!(!window.contains(99));
        assert!(window.contains(100));
        assert!(window.contains(199));
        assert!(!window.contains(200));
        assert!(AttributeWindow::ALWAYS.contains(i64::MIN));
    }
}
