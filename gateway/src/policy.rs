//! The built-in password policy: length in Unicode code points after NFC
//! normalisation (never truncated, case kept), a blocklist, the user name,
//! no control characters, and not only invisible characters. No composition
//! rules (NIST SP 800-63B-4, OWASP ASVS 5.0 V6.2): spaces and any other
//! printable characters are allowed anywhere in a password.

use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, WhiteSpace};
use icu_properties::{CodePointMapData, CodePointSetData};
use unicode_normalization::UnicodeNormalization;

use crate::secret::Secret;
use crate::workflow::PasswordPolicy;

/// Why a password was refused; the text is shown to the user, so it names
/// the rule and never repeats the password.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Violation {
    /// Fewer code points than the minimum.
    TooShort {
        /// The minimum.
        min: u32,
    },
    /// More code points than the maximum.
    TooLong {
        /// The maximum.
        max: u32,
    },
    /// On the blocklist of common or breached passwords.
    Blocklisted,
    /// Contains the user name.
    ContainsUserName,
    /// Contains a control character (C0 such as tab, line feed or NUL, DEL,
    /// or C1): invisible, and typed differently (or not at all) elsewhere.
    ControlCharacters,
    /// Made only of whitespace or invisible characters (Unicode White_Space,
    /// default-ignorable code points such as U+200B, format characters):
    /// nobody can see or retype it.
    OnlyInvisible,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TooShort { min } => write!(f, "use at least {min} characters"),
            Violation::TooLong { max } => write!(f, "use at most {max} characters"),
            Violation::Blocklisted => f.write_str(
                "this password is too common or has appeared in a breach; choose another",
            ),
            Violation::ContainsUserName => {
                f.write_str("the password must not contain your user name")
            }
            Violation::ControlCharacters => f.write_str(
                "the password must not contain control characters such as tabs, line breaks \
                 or NUL; spaces inside a password stay allowed",
            ),
            Violation::OnlyInvisible => f.write_str(
                "the password must not be made only of spaces or invisible characters; \
                 spaces inside a password stay allowed",
            ),
        }
    }
}

/// The one normalisation applied to every password before it is checked or
/// set: Unicode NFC. Nothing else (no trimming, no case folding).
pub fn normalise(password: &Secret) -> Secret {
    Secret::new(password.expose().nfc().collect())
}

/// Checks a (normalised) password against `policy` for `user_name`.
/// Returns every rule it breaks, in a stable order.
pub fn check(policy: &PasswordPolicy, password: &Secret, user_name: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let length = password.code_points();
    if length < policy.min_length as usize {
        out.push(Violation::TooShort {
            min: policy.min_length,
        });
    }
    if length > policy.max_length as usize {
        out.push(Violation::TooLong {
            max: policy.max_length,
        });
    }
    let folded = Secret::new(password.expose().to_lowercase());
    if policy.blocklist.contains(folded.expose()) {
        out.push(Violation::Blocklisted);
    }
    let name: String = user_name.trim().nfc().collect::<String>().to_lowercase();
    if policy.reject_user_name && name.chars().count() >= 3 && folded.expose().contains(&name) {
        out.push(Violation::ContainsUserName);
    }
    let text = password.expose();
    if text.chars().any(char::is_control) {
        out.push(Violation::ControlCharacters);
    }
    if !text.is_empty() && text.chars().all(invisible) {
        out.push(Violation::OnlyInvisible);
    }
    out
}

/// Whether `c` leaves no visible mark: a control character, Unicode
/// White_Space, a default-ignorable code point (U+200B..U+200D, U+2060,
/// U+FEFF, variation selectors, U+3164, ..) or a format character (Cf).
fn invisible(c: char) -> bool {
    c.is_control()
        || CodePointSetData::new::<WhiteSpace>().contains(c)
        || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 8,
            max_length: 64,
            blocklist: Arc::new(HashSet::from([
                "password1".to_owned(),
                "correcthorse".to_owned(),
            ])),
            blocklist_source: None,
            reject_user_name: true,
            must_change: false,
        }
    }

    fn check_str(pw: &str, user: &str) -> Vec<Violation> {
        check(&policy(), &normalise(&Secret::from(pw)), user)
    }

    #[test]
    fn length_counts_code_points_not_bytes() {
        // 8 code points, 24 bytes.
        assert_eq!(check_str("ééééééèè", "bob"), vec![]);
        assert_eq!(
            check_str("short", "bob"),
            vec![Violation::TooShort { min: 8 }]
        );
        assert_eq!(
            check_str(&"x".repeat(65), "bob"),
            vec![Violation::TooLong { max: 64 }]
        );
    }

    #[test]
    fn nfc_makes_composed_and_decomposed_forms_equal() {
        let composed = normalise(&Secret::from("caf\u{e9}-cr\u{e8}me-br\u{fb}l\u{e9}e"));
        let decomposed = normalise(&Secret::from(
            "cafe\u{301}-cre\u{300}me-bru\u{302}le\u{301}e",
        ));
        assert_eq!(composed, decomposed);
    }

    #[test]
    fn blocklist_is_case_insensitive_and_user_name_is_refused() {
        assert_eq!(check_str("PassWord1", "bob"), vec![Violation::Blocklisted]);
        assert_eq!(
            check_str("my-Alice-2026!", "alice"),
            vec![Violation::ContainsUserName]
        );
        // No composition rules: a long lowercase passphrase is fine.
        assert_eq!(check_str("purple monkey dishwasher", "alice"), vec![]);
    }

    #[test]
    fn control_characters_are_refused_anywhere() {
        for pw in [
            "correct\thorse battery",
            "correct horse battery\n",
            "correct\r\nhorse battery",
            "\0correct horse battery",
            "correct horse\u{1b}[0m battery",
            "correct horse battery\u{7f}",
            "correct horse\u{85}battery",
            "correct horse\u{9f}battery",
        ] {
            assert_eq!(
                check_str(pw, "bob"),
                vec![Violation::ControlCharacters],
                "{pw:?}"
            );
        }
        // Made only of control characters: both rules, each named.
        assert_eq!(
            check_str(&"\t\n".repeat(10), "bob"),
            vec![Violation::ControlCharacters, Violation::OnlyInvisible]
        );
        assert_eq!(
            check_str(&"\0".repeat(20), "bob"),
            vec![Violation::ControlCharacters, Violation::OnlyInvisible]
        );
    }

    #[test]
    fn passwords_of_only_invisible_characters_are_refused() {
        for pw in [
            " ".repeat(20),
            "\u{200b}".repeat(20),
            "\u{200c}\u{200d}\u{2060}\u{feff}".repeat(5),
            "\u{a0}\u{2003}\u{3000}\u{2028}".repeat(5),
            "\u{3164}".repeat(10),
            "\u{ad}\u{180e}\u{fe0f}\u{e0001}".repeat(5),
            " \u{200b} \u{200b} \u{200b} \u{200b} \u{200b}".to_owned(),
        ] {
            assert_eq!(
                check_str(&pw, "bob"),
                vec![Violation::OnlyInvisible],
                "{pw:?}"
            );
        }
    }

    #[test]
    fn spaces_and_symbols_inside_a_password_stay_allowed() {
        for pw in [
            "purple monkey dishwasher",
            "  leading and trailing spaces  ",
            "x                  ",
            "\u{200b}zero width but visible text",
            "non\u{a0}breaking\u{a0}spaces ok",
            "👩\u{200d}👩\u{200d}👧 family emoji",
            "ユーザー パスワード",
            "…………………………",
        ] {
            assert_eq!(check_str(pw, "bob"), vec![], "{pw:?}");
        }
    }

    #[test]
    fn the_new_messages_say_what_to_change_and_what_stays_allowed() {
        let control = Violation::ControlCharacters.to_string();
        let invisible = Violation::OnlyInvisible.to_string();
        assert_ne!(control, invisible);
        for m in [&control, &invisible] {
            assert!(m.contains("spaces inside a password stay allowed"), "{m}");
        }
        assert!(control.contains("control characters"), "{control}");
        assert!(invisible.contains("invisible"), "{invisible}");
    }

    #[test]
    fn messages_never_repeat_the_password() {
        for v in check_str("alice", "alice") {
            assert!(!v.to_string().contains("alice"), "{v}");
        }
    }
}
