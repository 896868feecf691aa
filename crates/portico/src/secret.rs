//! Secrets: what must never be shown.
//!
//! A [`Secret`] prints as `****`, in `Display` and `Debug` alike, so that it cannot reach a log
//! line, `/status`, a metric or an error by accident; only [`Secret::expose`] gives its bytes,
//! at the one place that sends them. A [`SecretSource`] says where a secret is read from: a file
//! (a mounted Kubernetes Secret, say) or an environment variable; a [`LiveSecret`] follows its
//! file as it changes. [`redact_url`] hides what a
//! URL carries that is secret before the URL is shown, and [`scrub`] takes secrets out of text
//! that came from elsewhere and may echo them (a remote API's error message).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::error::ConfigError;

/// What a secret prints as.
pub const HIDDEN: &str = "****";

/// A secret value: a password, a token, a key. Only [`Secret::expose`] gives it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl AsRef<[u8]>) -> Secret {
        Secret(Arc::from(value.as_ref()))
    }

    /// The bytes, for the one place that must send them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, for a header or an API call; an error names `what` when it is not
    /// UTF-8 (the value itself is never shown).
    pub fn expose_text(&self, what: &str) -> Result<&str, ConfigError> {
        std::str::from_utf8(&self.0)
            .map_err(|_| ConfigError::invalid(format!("{what}: the secret is not UTF-8 text")))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

/// Where a secret is read from. `Debug` and `Display` name the place, never the value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, read again at every load (a mounted Secret changes under the process);
    /// trailing newlines are not part of the secret.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file {}", p.display()),
            SecretSource::Env(n) => write!(f, "environment variable {n}"),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl SecretSource {
    /// The source a pair of `<name>File` / `<name>Env` fields gives: one of them, or none.
    /// `field` is the fields' stem as written (`secret`, `bearerToken`), for the errors.
    pub fn from_fields(
        field: &str,
        file: Option<&str>,
        env: Option<&str>,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (file.map(str::trim), env.map(str::trim)) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(format!(
                "{field}File and {field}Env are both set: give one"
            ))),
            (Some(""), None) => Err(ConfigError::invalid(format!("{field}File: is empty"))),
            (None, Some("")) => Err(ConfigError::invalid(format!("{field}Env: is empty"))),
            (Some(f), None) => Ok(Some(SecretSource::File(PathBuf::from(f)))),
            (None, Some(e)) => Ok(Some(SecretSource::Env(e.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// Reads the secret. A file that cannot be read is `failed` (it may be mounted later); an
    /// unset variable or an empty secret is `invalid`.
    pub fn load(&self) -> Result<Secret, ConfigError> {
        let bytes = match self {
            SecretSource::File(path) => std::fs::read(path).map_err(|e| {
                ConfigError::failed(format!("cannot read the secret in {}: {e}", path.display()))
            })?,
            SecretSource::Env(name) => std::env::var_os(name)
                .ok_or_else(|| {
                    ConfigError::invalid(format!("the environment variable {name} is not set"))
                })?
                .into_encoded_bytes(),
        };
        let mut end = bytes.len();
        while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        if end == 0 {
            return Err(ConfigError::invalid(format!(
                "the secret in the {self} is empty"
            )));
        }
        Ok(Secret::new(&bytes[..end]))
    }
}

/// How often the file of a [`LiveSecret`] is looked at for a change.
const LIVE_CHECK: Duration = Duration::from_secs(1);

/// A secret that follows its source: a file is read again when it changes (a rotated token, a
/// Secret updated under its mount), looked at once a second at most. When the file cannot be
/// read, the last good value stays, and a warning is logged once per change of the file.
pub struct LiveSecret {
    source: SecretSource,
    state: Mutex<LiveState>,
}

struct LiveState {
    value: Secret,
    checked: Instant,
    /// The file's modification time when it was last read, and whether that read failed.
    stamp: Option<SystemTime>,
    failed: bool,
}

fn stamp(source: &SecretSource) -> Option<SystemTime> {
    match source {
        SecretSource::File(path) => std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        SecretSource::Env(_) => None,
    }
}

impl fmt::Debug for LiveSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveSecret({})", self.source)
    }
}

impl LiveSecret {
    /// The secret of `source`, read now.
    pub fn load(source: SecretSource) -> Result<LiveSecret, ConfigError> {
        let stamp = stamp(&source);
        let value = source.load()?;
        Ok(LiveSecret {
            source,
            state: Mutex::new(LiveState {
                value,
                checked: Instant::now(),
                stamp,
                failed: false,
            }),
        })
    }

    /// The value as it is now.
    pub fn current(&self) -> Secret {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(self.source, SecretSource::File(_)) && state.checked.elapsed() >= LIVE_CHECK {
            state.checked = Instant::now();
            let now = stamp(&self.source);
            if now.is_some() && now != state.stamp {
                match self.source.load() {
                    Ok(v) => {
                        tracing::info!(source = %self.source, "secret read again");
                        state.value = v;
                        state.failed = false;
                    }
                    Err(e) => {
                        if !state.failed {
                            tracing::warn!(error = %e, "cannot read a secret again: the last value stays");
                        }
                        state.failed = true;
                    }
                }
                state.stamp = now;
            }
        }
        state.value.clone()
    }

    /// Whether `offered` is the secret, compared in constant time.
    pub fn matches(&self, offered: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.current().expose().ct_eq(offered))
    }
}

/// Whether a query parameter's name says its value is a credential.
fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "key",
        "sig",
        "auth",
        "credential",
        "code",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// `url` as it may be shown: its password and the values of credential-like query parameters
/// (`token`, `api_key`, `sig`, …) replaced by `****`. Text that is not a URL is kept as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return redact_userinfo(url);
    };
    let mut changed = false;
    if u.password().is_some() {
        let _ = u.set_password(Some(HIDDEN));
        changed = true;
    }
    if u.query_pairs().any(|(k, _)| secret_param(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    HIDDEN.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        u.to_string()
    } else {
        url.to_string()
    }
}

/// Text that does not parse as a URL but may still be one with a password (`amqp://u:pw@` with
/// no host): whatever lies between `scheme://user:` and `@` is replaced by `****`.
fn redact_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (Some(at), Some(colon)) = (authority.rfind('@'), authority.find(':')) else {
        return text.to_string();
    };
    if colon >= at {
        return text.to_string();
    }
    format!(
        "{}{}{HIDDEN}{}",
        &text[..start],
        &authority[..=colon],
        &text[start + at..]
    )
}

/// `text` with every occurrence of each of `secrets` replaced by `****`: for text from
/// elsewhere that may echo what was sent, like a remote API's error message. Secrets shorter
/// than four bytes are left alone (they would blank out ordinary words).
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let Ok(s) = std::str::from_utf8(s.expose()) else {
            continue;
        };
        if s.len() >= 4 {
            out = out.replace(s, HIDDEN);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "**** ****");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn urls_lose_their_passwords_and_tokens() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.com/in?token=abc&x=1&api_key=k"),
            "https://bob:****@example.com/in?token=****&x=1&api_key=****"
        );
        assert_eq!(redact_url("http://h:1/p?a=b"), "http://h:1/p?a=b");
        assert_eq!(redact_url("not a url"), "not a url");
        // Not a URL the parser takes, a password all the same.
        assert_eq!(redact_url("amqp://guest:pw@"), "amqp://guest:****@");
        assert_eq!(
            redact_url("amqp://guest:p:w@/x?y"),
            "amqp://guest:****@/x?y"
        );
        assert_eq!(redact_url("amqp://guest@/x"), "amqp://guest@/x");
    }

    #[test]
    fn scrub_takes_out_echoed_secrets() {
        let token = Secret::new("tok-123456");
        let short = Secret::new("ab");
        assert_eq!(
            scrub("echo: tok-123456 and ab more", &[&token, &short]),
            "echo: **** and ab more"
        );
    }

    #[test]
    fn sources_load_without_trailing_newlines_and_refuse_empty_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "value\r\n").unwrap();
        let s = SecretSource::File(f.clone());
        assert_eq!(s.load().unwrap().expose(), b"value");
        std::fs::write(&f, "\n").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(
            e.contains("is empty") && e.contains(&f.display().to_string()),
            "{e}"
        );
        assert_eq!(
            SecretSource::from_fields("bearerToken", Some(" /t "), None).unwrap(),
            Some(SecretSource::File("/t".into()))
        );
        let e = SecretSource::from_fields("bearerToken", Some("/t"), Some("T")).unwrap_err();
        assert!(
            e.to_string().contains("bearerTokenFile and bearerTokenEnv"),
            "{e}"
        );
    }

    #[test]
    fn a_live_secret_follows_its_file_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "one\n").unwrap();
        let live = LiveSecret::load(SecretSource::File(f.clone())).unwrap();
        assert!(live.matches(b"one") && !live.matches(b"two"));
        // A new file (as a Secret mount swaps it), with another modification time.
        std::fs::write(&f, "two\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        live.state.lock().unwrap().checked = Instant::now() - LIVE_CHECK;
        assert_eq!(live.current().expose(), b"two");
        // Emptied: refused, the last value stays.
        std::fs::write(&f, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        live.state.lock().unwrap().checked = Instant::now() - LIVE_CHECK;
        assert_eq!(live.current().expose(), b"two");
    }
}
