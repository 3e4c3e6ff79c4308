//! The self-service page: its HTML rendered in the person's language
//! (`crate::i18n`) with the organisation's branding from the gateway
//! config's `page:` section (name, logo, accent colour, helpdesk), its
//! script and style, the logo and the brand's colours; and [`Lang`], the
//! language of an API request.
//!
//! The page's texts are the catalog's: the HTML is rendered with them, and
//! the whole catalog is embedded as a JSON data block for the script (a
//! `type="application/json"` element is not executed, so the CSP's
//! `script-src 'self'` holds).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Api;
use super::problem::{Code, Problem};
use crate::i18n;
use crate::workflow::Diagnostic;
use crate::workflow::yaml::Document;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");
const FAVICON_SVG: &str = include_str!("../../assets/favicon.svg");

/// The largest logo file accepted (it is held in memory and sent with
/// every page view).
pub const LOGO_LIMIT: u64 = 512 * 1024;

/// The contrast white button text must have on the accent colour (WCAG 2.2
/// AA for normal text).
const MIN_CONTRAST: f64 = 4.5;

/// The branding of the page (the config's `page:` section).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSettings {
    /// The organisation's name, shown above the page's heading.
    pub name: Option<String>,
    /// The organisation's logo, read and checked when the config is loaded.
    pub logo: Option<Logo>,
    /// The accent colour (`#rrggbb`): buttons, links, focus rings.
    pub accent: Option<String>,
    /// Where people get help, shown on failure and lockout screens.
    pub helpdesk: Option<Helpdesk>,
}

/// A logo the gateway serves at `/logo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logo {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its media type, from its first bytes.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: Arc<[u8]>,
}

/// The helpdesk as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helpdesk {
    /// What to show, e.g. `IT service desk, +49 30 1234-567`.
    pub text: String,
    /// A link for the text: `https://`, `mailto:` or `tel:`.
    pub url: Option<String>,
}

/// The config's `page:` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    logo: Option<PathBuf>,
    #[serde(default)]
    accent: Option<String>,
    #[serde(default)]
    helpdesk: Option<RawHelpdesk>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelpdesk {
    text: String,
    #[serde(default)]
    url: Option<String>,
}

/// The page's settings from the config's `page:` section (`config` is the
/// file, `doc` its positions, `resolve` makes a path in it absolute);
/// mistakes are pushed to `errors` at file:line:column. The schema has
/// checked the shapes (name and text lengths, `#rrggbb`, the URL schemes).
pub fn settings(
    config: &Path,
    doc: &Document,
    raw: Option<RawPage>,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    errors: &mut Vec<Diagnostic>,
) -> PageSettings {
    let Some(raw) = raw else {
        return PageSettings::default();
    };
    let logo = raw.logo.and_then(|file| {
        let file = resolve(file);
        match read_logo(&file) {
            Ok(logo) => Some(logo),
            Err((message, help)) => {
                errors.push(
                    Diagnostic::error(config, doc.value_pos("/page/logo"), "file", message)
                        .with_help(help),
                );
                None
            }
        }
    });
    if let Some(accent) = &raw.accent
        && let Some(rgb) = parse_hex(accent)
    {
        let ratio = contrast(rgb, [255, 255, 255]);
        if ratio < MIN_CONTRAST {
            errors.push(
                Diagnostic::error(
                    config,
                    doc.value_pos("/page/accent"),
                    "value",
                    format!(
                        "`page.accent` `{accent}` is too light: white text on it has a contrast of {ratio:.1}:1, and buttons need {MIN_CONTRAST}:1 to be readable"
                    ),
                )
                .with_help(format!(
                    "choose a darker shade of it, e.g. `{}`",
                    darker_until_readable(rgb)
                )),
            );
        }
    }
    PageSettings {
        name: raw.name,
        logo,
        accent: raw.accent.map(|a| a.to_ascii_lowercase()),
        helpdesk: raw.helpdesk.map(|h| Helpdesk {
            text: h.text,
            url: h.url,
        }),
    }
}

/// Reads a logo file and tells its type from its first bytes; the error is
/// a message and a help line.
fn read_logo(file: &Path) -> Result<Logo, (String, String)> {
    let bytes = crate::readfile::read_limited(file, LOGO_LIMIT).map_err(|e| {
        (
            format!("`page.logo`: {e}"),
            format!(
                "give a PNG, JPEG, WebP or SVG file of at most {} KiB, relative to the config file",
                LOGO_LIMIT / 1024
            ),
        )
    })?;
    let content_type = image_type(&bytes).ok_or_else(|| {
        (
            format!(
                "`page.logo` {} is not a PNG, JPEG, WebP or SVG image",
                file.display()
            ),
            "convert the logo to PNG or SVG (the page shows it in an `img` element)".to_owned(),
        )
    })?;
    Ok(Logo {
        file: file.to_owned(),
        content_type,
        bytes: bytes.into(),
    })
}

/// The media type of an image from its first bytes (an SVG: UTF-8 text
/// with an `<svg` element).
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if std::str::from_utf8(bytes).is_ok_and(|t| t.contains("<svg")) {
        Some("image/svg+xml")
    } else {
        None
    }
}

fn parse_hex(colour: &str) -> Option<[u8; 3]> {
    let hex = colour.strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// WCAG 2.2 relative luminance.
fn luminance(rgb: [u8; 3]) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2])
}

/// WCAG 2.2 contrast ratio of two colours.
fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// `rgb` darkened in steps of 5% until white text on it is readable.
fn darker_until_readable(rgb: [u8; 3]) -> String {
    let mut c = rgb;
    for _ in 0..40 {
        if contrast(c, [255, 255, 255]) >= MIN_CONTRAST {
            break;
        }
        c = c.map(|v| (f64::from(v) * 0.95) as u8);
    }
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// The language of a request: `?lang=`, else `Accept-Language`, else
/// English (`crate::i18n::negotiate`). Never refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lang(pub &'static str);

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Lang(language_of(parts.uri.query(), &parts.headers)))
    }
}

fn language_of(query: Option<&str>, headers: &HeaderMap) -> &'static str {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    i18n::negotiate(query_param(query, "lang"), accept)
}

/// The first value of `name` in a query string (values are ASCII words
/// here, so no percent-decoding is needed: anything else is ignored).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `routes` with the page's: `/`, its assets, `/logo` and `/brand.css`.
pub(crate) fn routes(routes: super::Routes) -> super::Routes {
    routes
        .get("/", index)
        .get("/app.js", || async {
            asset(APP_JS, "text/javascript; charset=utf-8")
        })
        .get("/style.css", || async {
            asset(STYLE_CSS, "text/css; charset=utf-8")
        })
        .get("/favicon.svg", || async {
            asset(FAVICON_SVG, "image/svg+xml")
        })
        .get("/brand.css", brand_css)
        .get("/logo", logo)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index(State(api): State<Arc<Api>>, parts: Parts) -> Response {
    let lang = language_of(parts.uri.query(), &parts.headers);
    let workflow = query_param(parts.uri.query(), "workflow");
    let html = render(&api.page(), lang, workflow);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_LANGUAGE, HeaderValue::from_static(lang)),
            (header::VARY, HeaderValue::from_static("Accept-Language")),
        ],
        html,
    )
        .into_response()
}

async fn brand_css(State(api): State<Arc<Api>>) -> Response {
    let css = match &api.page().accent {
        // Buttons carry the brand in both colour schemes (white text on
        // it is checked readable); text and focus rings take it only on
        // the light background, where it is readable too.
        Some(accent) => format!(
            ":root {{ --brand: {accent}; --brand-text: #ffffff; }}\n\
             @media (prefers-color-scheme: light) {{ :root {{ --accent: {accent}; --focus: {accent}; }} }}\n"
        ),
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}

async fn logo(State(api): State<Arc<Api>>) -> Response {
    match &api.page().logo {
        Some(logo) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(logo.content_type),
                ),
                // An SVG opened on its own runs nothing and loads nothing.
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                    ),
                ),
            ],
            logo.bytes.to_vec(),
        )
            .into_response(),
        None => Problem::new(Code::NotFound).into_response(),
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page in `lang` with `settings`' branding: `{{t:KEY}}` is the
/// catalog's text, `{{lang}}`, `{{brand}}`, `{{languages}}`,
/// `{{helpdesk}}`, `{{brand-css}}` and `{{catalog}}` are fragments.
fn render(settings: &PageSettings, lang: &'static str, workflow: Option<&str>) -> String {
    let mut out = String::with_capacity(INDEX_HTML.len() + 8192);
    let mut rest = INDEX_HTML;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        rest = &after[end + 2..];
        match name.strip_prefix("t:") {
            Some(key) => out.push_str(&escape(i18n::text(lang, key))),
            None => out.push_str(&fragment(settings, lang, workflow, name)),
        }
    }
    out.push_str(rest);
    out
}

fn fragment(
    settings: &PageSettings,
    lang: &'static str,
    workflow: Option<&str>,
    name: &str,
) -> String {
    match name {
        "lang" => lang.to_owned(),
        "brand-css" if settings.accent.is_some() => {
            r#"<link rel="stylesheet" href="/brand.css">"#.to_owned()
        }
        "brand" if settings.name.is_some() || settings.logo.is_some() => {
            let mut html = String::from(r#"<header class="brand" data-testid="brand">"#);
            if settings.logo.is_some() {
                // Beside the name it would only repeat it.
                let alt = if settings.name.is_some() { "" } else { "Logo" };
                html.push_str(&format!(
                    r#"<img class="logo" src="/logo" alt="{alt}" data-testid="logo">"#
                ));
            }
            if let Some(name) = &settings.name {
                html.push_str(&format!(
                    r#"<span class="org-name" data-testid="org-name">{}</span>"#,
                    escape(name)
                ));
            }
            html.push_str("</header>");
            html
        }
        "languages" => i18n::LANGUAGES
            .iter()
            .map(|l| {
                let label = escape(i18n::text(l, "language.name"));
                if *l == lang {
                    format!(r#"<span lang="{l}" aria-current="true">{label}</span>"#)
                } else {
                    let also = workflow.map(|w| format!("&amp;workflow={w}")).unwrap_or_default();
                    format!(
                        r#"<a href="?lang={l}{also}" lang="{l}" hreflang="{l}" data-lang="{l}">{label}</a>"#
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        "helpdesk" => match &settings.helpdesk {
            Some(h) => {
                let text = escape(&h.text);
                let body = match &h.url {
                    Some(url) => format!(r#"<a href="{}">{text}</a>"#, escape(url)),
                    None => text,
                };
                format!(
                    r#"<p id="helpdesk" class="helpdesk" data-testid="helpdesk" hidden><span>{}</span> {body}</p>"#,
                    escape(i18n::text(lang, "helpdesk.intro"))
                )
            }
            None => String::new(),
        },
        // JSON in a data block: `<` escaped so no text can end the element.
        "catalog" => i18n::catalog_json(lang).replace('<', "\\u003c"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_types_come_from_the_bytes() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_type(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            image_type(b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            Some("image/svg+xml")
        );
        assert_eq!(image_type(b"GIF89a"), None);
        assert_eq!(image_type(b"plain text"), None);
    }

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast([0, 0, 0], [255, 255, 255]) - 21.0).abs() < 0.01);
        // The page's own accent passes; a yellow does not.
        assert!(contrast(parse_hex("#0a58ca").unwrap(), [255; 3]) >= MIN_CONTRAST);
        assert!(contrast(parse_hex("#ffcc00").unwrap(), [255; 3]) < MIN_CONTRAST);
        let suggested = parse_hex(&darker_until_readable([0xff, 0xcc, 0x00])).unwrap();
        assert!(contrast(suggested, [255; 3]) >= MIN_CONTRAST);
    }

    #[test]
    fn the_page_is_rendered_in_its_language_with_the_branding_escaped() {
        let settings = PageSettings {
            name: Some("Example <Corp>".into()),
            logo: None,
            accent: Some("#0b5fff".into()),
            helpdesk: Some(Helpdesk {
                text: "Call 123".into(),
                url: Some("tel:123".into()),
            }),
        };
        let html = render(&settings, "de", Some("page-reset"));
        assert!(html.contains(r#"<html lang="de">"#));
        assert!(html.contains("Passwort zurücksetzen"));
        assert!(html.contains("Example &lt;Corp&gt;"));
        assert!(html.contains(r#"href="/brand.css""#));
        assert!(html.contains(r#"<a href="tel:123">Call 123</a>"#));
        assert!(html.contains(r#"href="?lang=en&amp;workflow=page-reset""#));
        assert!(!html.contains("{{"), "every placeholder is filled");
        let plain = render(&PageSettings::default(), "en", None);
        assert!(plain.contains(r#"<html lang="en">"#));
        assert!(!plain.contains("brand.css") && !plain.contains("helpdesk\""));
    }

    #[test]
    fn the_config_section_is_read_with_the_logo_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.png"), b"\x89PNG\r\n\x1a\nrest").unwrap();
        let file = dir.path().join("gateway.yaml");
        let text = "version: 1\npage:\n  name: Example Corp\n  logo: logo.png\n  accent: \"#0B5FFF\"\n  \
                    helpdesk: { text: Call us, url: \"mailto:help@example.com\" }\n";
        let config = crate::config::GatewayConfig::from_bytes(&file, text.as_bytes()).unwrap();
        let page = config.page;
        assert_eq!(page.name.as_deref(), Some("Example Corp"));
        assert_eq!(page.accent.as_deref(), Some("#0b5fff"));
        let logo = page.logo.unwrap();
        assert_eq!(logo.content_type, "image/png");
        assert_eq!(logo.file, dir.path().join("logo.png"));
        assert_eq!(
            page.helpdesk,
            Some(Helpdesk {
                text: "Call us".into(),
                url: Some("mailto:help@example.com".into())
            })
        );
        // Without the section: nothing.
        let bare = crate::config::GatewayConfig::from_bytes(&file, b"version: 1\n").unwrap();
        assert_eq!(bare.page, PageSettings::default());
    }

    #[test]
    fn the_query_names_the_language_and_other_values_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("de-DE,de;q=0.9"),
        );
        assert_eq!(language_of(None, &headers), "de");
        assert_eq!(language_of(Some("lang=en"), &headers), "en");
        assert_eq!(
            language_of(Some("workflow=x&lang=de"), &HeaderMap::new()),
            "de"
        );
        assert_eq!(language_of(Some("lang=%3Cscript"), &HeaderMap::new()), "en");
        assert_eq!(query_param(Some("workflow=a\"b"), "workflow"), None);
    }
}
