//! The languages the gateway speaks to people: message catalogs (one JSON
//! file per language in `assets/i18n/`, compiled in) and the choice of a
//! language from `?lang=` or `Accept-Language`.
//!
//! The catalogs hold the page's own texts and what the API says for a flow
//! (notices, password rules, violations), by stable key; a text may have
//! `{name}` placeholders. Every catalog has the same keys as the English
//! one (a unit test checks it). A flow keeps the language it started with
//! (`Flow::language`); plugins read it through `locale.language`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The languages with a catalog, English first: ISO 639-1 codes.
pub const LANGUAGES: [&str; 2] = ["en", "de"];

/// The language used when nothing the person asked for is spoken here.
pub const FALLBACK: &str = "en";

const SOURCES: [&str; 2] = [
    include_str!("../assets/i18n/en.json"),
    include_str!("../assets/i18n/de.json"),
];

type Catalog = BTreeMap<String, String>;

fn catalogs() -> &'static [Catalog; 2] {
    static CATALOGS: OnceLock<[Catalog; 2]> = OnceLock::new();
    // The sources are compiled in and checked by the tests below; a broken
    // one would read as empty (every text then falls back to its key).
    CATALOGS.get_or_init(|| SOURCES.map(|s| serde_json::from_str(s).unwrap_or_default()))
}

fn index(language: &str) -> usize {
    LANGUAGES.iter().position(|l| *l == language).unwrap_or(0)
}

/// `language` if the gateway has a catalog for it, else [`FALLBACK`].
pub fn supported(language: &str) -> &'static str {
    LANGUAGES[index(language)]
}

/// The catalog of `language` as JSON text (for the page to embed).
pub fn catalog_json(language: &str) -> &'static str {
    SOURCES[index(language)]
}

/// The text for `key` in `language`, else in English, else `key` itself.
pub fn text<'a>(language: &str, key: &'a str) -> &'a str {
    let all = catalogs();
    all[index(language)]
        .get(key)
        .or_else(|| all[0].get(key))
        .map_or(key, String::as_str)
}

/// [`text`] with each `{name}` replaced by its value from `args`.
pub fn format(language: &str, key: &str, args: &[(&str, &str)]) -> String {
    let mut out = text(language, key).to_owned();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The language for a request: `?lang=` if it names a language spoken
/// here, else the best match of `Accept-Language` (RFC 9110 weights, a
/// tag matched by its primary subtag: `de-AT` is `de`; `*` is the first
/// language), else [`FALLBACK`].
pub fn negotiate(query_lang: Option<&str>, accept_language: Option<&str>) -> &'static str {
    if let Some(wanted) = query_lang.and_then(primary)
        && let Some(l) = LANGUAGES.iter().find(|l| **l == wanted)
    {
        return l;
    }
    let Some(header) = accept_language else {
        return FALLBACK;
    };
    let mut best: Option<(u32, &'static str)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let weight = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(Some(1000), weight)
            .unwrap_or(0);
        if weight == 0 {
            continue;
        }
        let found = if tag == "*" {
            Some(FALLBACK)
        } else {
            primary(tag).and_then(|p| LANGUAGES.iter().copied().find(|l| *l == p))
        };
        // The first of equal weights wins, as the header lists preference.
        if let Some(l) = found
            && best.is_none_or(|(w, _)| weight > w)
        {
            best = Some((weight, l));
        }
    }
    best.map_or(FALLBACK, |(_, l)| l)
}

/// The primary subtag of a language tag, lowercased, if it is 2 or 3 letters.
fn primary(tag: &str) -> Option<String> {
    let first = tag.trim().split(['-', '_']).next()?;
    ((2..=3).contains(&first.len()) && first.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| first.to_ascii_lowercase())
}

/// A `q` value in thousandths (`0.8` → 800); `None` if malformed.
fn weight(q: &str) -> Option<u32> {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if !(int == "0" || int == "1") || frac.len() > 3 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac: u32 = format!("{frac:0<3}").parse().ok()?;
    let w = int.parse::<u32>().ok()? * 1000 + frac;
    (w <= 1000).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_parses_and_has_exactly_the_english_keys() {
        let en: Catalog = serde_json::from_str(SOURCES[0]).unwrap();
        for (lang, src) in LANGUAGES.iter().zip(SOURCES) {
            let c: Catalog = serde_json::from_str(src).unwrap();
            let missing: Vec<_> = en.keys().filter(|k| !c.contains_key(*k)).collect();
            let extra: Vec<_> = c.keys().filter(|k| !en.contains_key(*k)).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{lang}: missing {missing:?}, extra {extra:?}"
            );
            assert!(
                c.values().all(|v| !v.trim().is_empty()),
                "{lang} has an empty text"
            );
            // Placeholders are the same in every language.
            for (k, v) in &c {
                let names = |s: &str| {
                    let mut n: Vec<String> = s
                        .split('{')
                        .skip(1)
                        .filter_map(|p| p.split_once('}'))
                        .map(|(a, _)| a.to_owned())
                        .collect();
                    n.sort();
                    n
                };
                assert_eq!(names(v), names(&en[k]), "{lang}: placeholders of {k}");
            }
        }
    }

    #[test]
    fn the_query_wins_then_accept_language_then_english() {
        assert_eq!(negotiate(Some("de"), Some("en")), "de");
        assert_eq!(negotiate(Some("DE-ch"), None), "de");
        // A language without a catalog in the query: the header decides.
        assert_eq!(negotiate(Some("fr"), Some("de")), "de");
        assert_eq!(negotiate(Some("fr"), None), "en");
        assert_eq!(negotiate(None, Some("de-AT,de;q=0.9,en;q=0.8")), "de");
        assert_eq!(negotiate(None, Some("fr-FR, de;q=0.5, en;q=0.7")), "en");
        assert_eq!(negotiate(None, Some("fr, de;q=0.1")), "de");
        assert_eq!(negotiate(None, Some("de;q=0, en;q=0.2")), "en");
        assert_eq!(negotiate(None, Some("fr, it")), "en");
        assert_eq!(negotiate(None, Some("*")), "en");
        assert_eq!(negotiate(None, Some("de;q=nonsense, en;q=0.3")), "en");
        assert_eq!(negotiate(None, Some("")), "en");
        assert_eq!(negotiate(None, None), "en");
        // Equal weights: the first listed.
        assert_eq!(negotiate(None, Some("de, en")), "de");
    }

    #[test]
    fn texts_fall_back_to_english_then_to_the_key() {
        assert_eq!(text("de", "button.continue"), "Weiter");
        assert_eq!(text("fr", "button.continue"), "Continue");
        assert_eq!(text("de", "no.such.key"), "no.such.key");
        assert_eq!(
            format("de", "rule.length", &[("min", "12"), ("max", "64")]),
            "Verwenden Sie 12 bis 64 Zeichen; Leerzeichen und beliebige Sonderzeichen sind erlaubt."
        );
    }
}
