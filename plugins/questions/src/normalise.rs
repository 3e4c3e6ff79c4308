//! How answers are compared: two answers are the same when their
//! normalised forms are.

use unicode_normalization::UnicodeNormalization;

/// An answer as it is hashed and compared: Unicode NFKC (so `ﬁ` is `fi`
/// and a full-width `Ａ` is `A`), full case folding (so `STRASSE` and
/// `straße` agree), NFKC again (folding may leave a string unnormalised),
/// then every run of Unicode whitespace made one space and the ends
/// trimmed.
pub fn normalise(answer: &str) -> String {
    let composed: String = answer.nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    let again: String = folded.nfkc().collect();
    let mut out = String::with_capacity(again.len());
    for word in again.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}
