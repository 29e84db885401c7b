//! The emoji catalogue: the allow-list of reactions a stream accepts. Clients may send an
//! emoji by name (`fire`) or by glyph (`🔥`); inside the system it is always the name, which
//! is a safe MongoDB field name and a stable metric dimension.

use crate::validation::{Rule, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The canonical name of a catalogue emoji, e.g. `fire`: lower-case ASCII, digits and `_`,
/// 1 to 32 characters. Used as the key of counts everywhere downstream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmojiName(String);

impl TryFrom<String> for EmojiName {
    type Error = CatalogueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmojiName> for String {
    fn from(name: EmojiName) -> String {
        name.0
    }
}

impl EmojiName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 32;

    /// Checks the name's shape (not whether a catalogue holds it).
    pub fn parse(value: &str) -> Result<Self, CatalogueError> {
        let shape_ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if shape_ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(CatalogueError::BadName(value.to_owned()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmojiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One catalogue entry: what is counted (`name`) and what is drawn (`glyph`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emoji {
    /// Canonical name, the counting key.
    pub name: EmojiName,
    /// The glyph browsers draw.
    pub glyph: String,
}

/// Why a catalogue specification was refused. Raised at start-up, so a misconfigured function
/// fails its init instead of rejecting every reaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// A name that is not lower-case ASCII, digits and `_`, 1 to 32 characters.
    #[error("emoji name {0:?} must be 1-32 characters of a-z, 0-9 and _")]
    BadName(String),
    /// An entry that is not `name=glyph`.
    #[error("catalogue entry {0:?} must look like name=glyph")]
    BadEntry(String),
    /// A glyph that is empty or too long to be one emoji.
    #[error("glyph {0:?} for an emoji must be 1-16 characters")]
    BadGlyph(String),
    /// The same name or glyph twice.
    #[error("emoji {0:?} appears twice in the catalogue")]
    Duplicate(String),
    /// No entries at all.
    #[error("the emoji catalogue must hold at least one emoji")]
    Empty,
    /// More entries than a catalogue may hold.
    #[error("the emoji catalogue may hold at most {max} emojis")]
    TooMany { max: usize },
}

/// The allow-list, in display order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EmojiCatalogue {
    emojis: Vec<Emoji>,
}

/// The catalogue used when `EMOJI_CATALOGUE` is not set.
pub const DEFAULT_CATALOGUE: &str =
    "thumbs_up=👍,heart=❤️,joy=😂,wow=😮,sad=😢,fire=🔥,clap=👏,party=🎉,cricket=🏏,hundred=💯";

const VARIATION_SELECTOR_16: char = '\u{FE0F}';

fn strip_variation_selector(glyph: &str) -> String {
    glyph
        .chars()
        .filter(|c| *c != VARIATION_SELECTOR_16)
        .collect()
}

impl EmojiCatalogue {
    /// Most emojis one catalogue may hold: a picker row a viewer can scan, and a bound on the
    /// counts document of a window.
    pub const MAX_EMOJIS: usize = 64;

    /// Parses `name=glyph,name=glyph,...` (the `EMOJI_CATALOGUE` format).
    pub fn parse(spec: &str) -> Result<Self, CatalogueError> {
        let mut entries = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, glyph) = entry
                .split_once('=')
                .ok_or_else(|| CatalogueError::BadEntry(entry.to_owned()))?;
            entries.push((name.trim(), glyph.trim()));
        }
        Self::from_entries(entries)
    }

    /// Builds a catalogue from `(name, glyph)` pairs in display order, with the same checks as
    /// [`EmojiCatalogue::parse`]: a stream registry's catalogue is held to the rules of the
    /// configured one.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CatalogueError> {
        let mut emojis: Vec<Emoji> = Vec::new();
        for (name, glyph) in entries {
            let shown = || format!("{name}={glyph}");
            let name = EmojiName::parse(name)?;
            if glyph.is_empty() || glyph.chars().count() > 16 {
                return Err(CatalogueError::BadGlyph(glyph.to_owned()));
            }
            let duplicate = emojis.iter().any(|e| {
                e.name == name
                    || strip_variation_selector(&e.glyph) == strip_variation_selector(glyph)
            });
            if duplicate {
                return Err(CatalogueError::Duplicate(shown()));
            }
            if emojis.len() == Self::MAX_EMOJIS {
                return Err(CatalogueError::TooMany {
                    max: Self::MAX_EMOJIS,
                });
            }
            emojis.push(Emoji {
                name,
                glyph: glyph.to_owned(),
            });
        }
        if emojis.is_empty() {
            return Err(CatalogueError::Empty);
        }
        Ok(Self { emojis })
    }

    /// The entries in display order.
    pub fn emojis(&self) -> &[Emoji] {
        &self.emojis
    }

    /// Finds an emoji by name, or by glyph with or without the emoji variation selector.
    pub fn find(&self, name_or_glyph: &str) -> Option<&Emoji> {
        let bare = strip_variation_selector(name_or_glyph);
        self.emojis.iter().find(|e| {
            e.name.as_str() == name_or_glyph || strip_variation_selector(&e.glyph) == bare
        })
    }

    /// Resolves the field `field` to a catalogue name, or says which rule it broke.
    pub fn resolve(&self, field: &str, name_or_glyph: &str) -> Result<EmojiName, ValidationError> {
        if name_or_glyph.is_empty() {
            return Err(ValidationError::new(field, Rule::Empty));
        }
        self.find(name_or_glyph)
            .map(|e| e.name.clone())
            .ok_or_else(|| {
                let shown: String = name_or_glyph.chars().take(40).collect();
                ValidationError::new(field, Rule::UnknownEmoji { value: shown })
            })
    }

    /// Whether `name` is a catalogue name (used to vet records read back from Kafka).
    pub fn contains(&self, name: &EmojiName) -> bool {
        self.emojis.iter().any(|e| &e.name == name)
    }
}

impl Default for EmojiCatalogue {
    fn default() -> Self {
        Self::parse(DEFAULT_CATALOGUE).expect("the built-in catalogue is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalogue_resolves_names_and_glyphs() {
        let c = EmojiCatalogue::default();
        assert_eq!(c.resolve("e", "fire").unwrap().as_str(), "fire");
        assert_eq!(c.resolve("e", "🔥").unwrap().as_str(), "fire");
        // The heart is stored with U+FE0F; clients often send it without.
        assert_eq!(c.resolve("e", "\u{2764}").unwrap().as_str(), "heart");
        assert_eq!(
            c.resolve("e", "\u{2764}\u{FE0F}").unwrap().as_str(),
            "heart"
        );
    }

    #[test]
    fn unknown_and_empty_emojis_name_the_field() {
        let c = EmojiCatalogue::default();
        let err = c.resolve("reactions[1].emoji", "🦄").unwrap_err();
        assert_eq!(err.field, "reactions[1].emoji");
        assert_eq!(err.rule.code(), "unknown_emoji");
        assert!(err.to_string().contains("🦄"));
        assert_eq!(c.resolve("e", "").unwrap_err().rule, Rule::Empty);
        // A huge unknown value is not echoed back whole.
        let long = "x".repeat(10_000);
        assert!(c.resolve("e", &long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn custom_catalogue_parses_and_rejects_mistakes() {
        let c = EmojiCatalogue::parse(" goal=⚽ , six=6️⃣ ").unwrap();
        assert_eq!(c.emojis().len(), 2);
        assert_eq!(c.emojis()[1].name.as_str(), "six");
        assert!(c.find("fire").is_none());
        assert_eq!(EmojiCatalogue::parse(""), Err(CatalogueError::Empty));
        assert!(matches!(
            EmojiCatalogue::parse("goal"),
            Err(CatalogueError::BadEntry(_))
        ));
        assert!(matches!(
            EmojiCatalogue::parse("Goal=⚽"),
            Err(CatalogueError::BadName(_))
        ));
        assert!(matches!(
            EmojiCatalogue::parse("goal="),
            Err(CatalogueError::BadGlyph(_))
        ));
        assert!(matches!(
            EmojiCatalogue::parse("goal=⚽,ball=⚽"),
            Err(CatalogueError::Duplicate(_))
        ));
        assert!(matches!(
            EmojiCatalogue::parse("goal=⚽,goal=🥅"),
            Err(CatalogueError::Duplicate(_))
        ));
    }
}
