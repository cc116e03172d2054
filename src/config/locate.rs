//! Where a refused value was written: `FILE:LINE:COLUMN` for the config
//! file (checked with the `toml` crate first: figment keeps no
//! positions), the `OPSWIRE_*` variable for the environment, `--bind` for
//! the flag.

use std::path::Path;

use serde::Deserialize;

use super::{Config, ConfigError};

/// Prefix of the environment variables that are settings.
pub(super) const ENV_PREFIX: &str = "OPSWIRE_";
/// Separator of nested settings in a variable's name (`OPSWIRE_LIMITS__QUEUE_LEN`).
pub(super) const ENV_SEPARATOR: &str = "__";

impl ConfigError {
    /// Adds where an [`ConfigError::Invalid`] setting was written: the
    /// `OPSWIRE_*` variable that set it (the environment wins over the
    /// file), else `FILE:LINE:COLUMN` of its key in `file`. Other errors,
    /// and settings left at their defaults, are returned as they are.
    pub fn locate(self, file: Option<&Path>) -> ConfigError {
        let ConfigError::Invalid { field, .. } = &self else {
            return self;
        };
        let at = env_var_of(field).or_else(|| {
            let path = file?;
            let text = std::fs::read_to_string(path).ok()?;
            let keys = toml_keys(&text)?;
            // `teams[0].hosts[1]` is found at its key, `teams[0].hosts`.
            let mut name = field.as_str();
            loop {
                if let Some(k) = keys.iter().find(|k| k.path == name) {
                    return Some(file_position(path, &text, k.span.start));
                }
                name = &name[..name.rfind(['.', '['])?];
            }
        });
        match at {
            Some(at) => ConfigError::At {
                at,
                error: Box::new(self),
            },
            None => self,
        }
    }
}

/// The `OPSWIRE_*` variable (as spelled in the environment) that sets
/// `field` (`limits.queue_len` → `OPSWIRE_LIMITS__QUEUE_LEN`), or a table
/// or array that holds it (`teams[0].name` → `OPSWIRE_TEAMS`), if one is set.
fn env_var_of(field: &str) -> Option<String> {
    if field == "auth.jwt_secret" && std::env::var_os("OPSWIRE_JWT_SECRET").is_some() {
        return Some("OPSWIRE_JWT_SECRET".into());
    }
    // `teams[0].hosts[1]` → teams, hosts
    let want: Vec<&str> = field
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    std::env::vars_os()
        .filter_map(|(name, _)| {
            let name = name.into_string().ok()?;
            let rest = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])?;
            let parts: Vec<&str> = rest.split(ENV_SEPARATOR).collect();
            let holds = parts.len() <= want.len()
                && parts
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b));
            holds.then_some((parts.len(), name))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, name)| name)
}

/// `FILE:LINE:COLUMN` of byte `offset` in `text` (both counted from 1).
fn file_position(path: &Path, text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{}:{line}:{column}", path.display())
}

/// Checks the config file on its own, so that an error points at the line
/// the user wrote (figment keeps no positions).
pub(super) fn check_toml(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(e) = toml::from_str::<Config>(text) else {
        return Ok(());
    };
    // The toml crate's message is one or more lines; keep them on one.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return Err(ConfigError::Source {
            at: path.display().to_string(),
            message,
        });
    };
    // The setting: the last key that starts at or before the error (the
    // key itself for an unknown field, the key of the value otherwise).
    let setting = toml_keys(text)
        .and_then(|keys| {
            keys.into_iter()
                .filter(|k| k.span.start <= span.start)
                .max_by_key(|k| k.span.start)
                .map(|k| k.path)
        })
        .or_else(|| key_written_at(text, span.start));
    Err(ConfigError::Source {
        at: file_position(path, text, span.start),
        message: match setting {
            Some(setting) => format!("{setting}: {message}"),
            None => message,
        },
    })
}

/// The key written on the line of byte `offset`, for a document that does
/// not parse (a number too large, say): `key` of `key = value`, after the
/// `[table]` above it if any.
fn key_written_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let (key, _) = text[line_start..offset].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        let name = l.strip_prefix('[')?.strip_suffix(']')?;
        Some(
            name.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned(),
        )
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// A key of a TOML document: its dotted path as the settings name it
/// (`teams[1].name`) and the bytes of the key.
struct TomlKey {
    path: String,
    span: std::ops::Range<usize>,
}

/// Every key of a TOML document, or `None` if it does not parse.
fn toml_keys(text: &str) -> Option<Vec<TomlKey>> {
    let tree: TomlTree = toml::from_str(text).ok()?;
    let mut keys = Vec::new();
    tree.collect("", &mut keys);
    Some(keys)
}

/// A TOML document with the position of every key.
enum TomlTree {
    Table(Vec<(toml::Spanned<String>, TomlTree)>),
    Array(Vec<TomlTree>),
    Leaf,
}

impl TomlTree {
    fn collect(self, prefix: &str, out: &mut Vec<TomlKey>) {
        match self {
            TomlTree::Table(entries) => {
                for (key, value) in entries {
                    let span = key.span();
                    let key = key.into_inner();
                    if key.starts_with("$__") {
                        continue; // the toml crate's own (a datetime's value)
                    }
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    value.collect(&path, out);
                    out.push(TomlKey { path, span });
                }
            }
            TomlTree::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    item.collect(&format!("{prefix}[{i}]"), out);
                }
            }
            TomlTree::Leaf => {}
        }
    }
}

impl<'de> Deserialize<'de> for TomlTree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TomlTree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<TomlTree, E> {
                Ok(TomlTree::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TomlTree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TomlTree::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TomlTree, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(TomlTree::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// A figment error, reported where its value came from: the variable's
/// name for the environment (figment says `LIMITS.QUEUE_LEN`), without
/// figment's nested backticks.
pub(super) fn figment_error(error: figment::Error, file: Option<&Path>) -> ConfigError {
    let mut errors = error.into_iter().map(|e| {
        let setting = e.path.join(".").to_ascii_lowercase();
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let at = if from_env {
            env_var_of(&setting).unwrap_or_else(|| {
                format!(
                    "{ENV_PREFIX}{}",
                    e.path.join(ENV_SEPARATOR).to_ascii_uppercase()
                )
            })
        } else {
            file.map_or_else(|| "configuration".into(), |p| p.display().to_string())
        };
        let problem = match &e.kind {
            figment::error::Kind::UnknownField(name, expected) => {
                format!("unknown field `{name}`, expected {}", one_of(expected))
            }
            figment::error::Kind::UnknownVariant(name, expected) => {
                format!("unknown variant `{name}`, expected {}", one_of(expected))
            }
            kind => kind.to_string(),
        };
        let message = if setting.is_empty() {
            problem
        } else {
            format!("{setting}: {problem}")
        };
        (at, message)
    });
    let (at, mut message) = errors.next().unwrap_or_default();
    for (more_at, more) in errors {
        message.push_str(&format!("; {more_at}: {more}"));
    }
    ConfigError::Source { at, message }
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` `` (as serde says it).
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "none here".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}
