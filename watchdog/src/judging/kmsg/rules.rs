//! Classification rules: regex, class, severity, action, and real example lines.
//!
//! The built-in rules live in `rules/builtin.toml`, in the same format an operator's
//! rules file uses. Priority is order: the operator's rules first (in file order), then
//! the built-in ones; the first rule whose regex matches decides. An operator's rule with
//! the id of a built-in replaces it; `disable = ["id", ...]` removes built-ins; a rule of
//! class `none` silences what it matches.
use std::path::Path;

use regex::{
    RegexBuilder,
    bytes::{RegexSet, RegexSetBuilder},
};
use serde::Deserialize;

use super::{Action, Class, Severity, prefix};

/// The built-in rules file, compiled in.
pub const BUILTIN: &str = include_str!("../../../rules/builtin.toml");
pub const BUILTIN_NAME: &str = "<built-in rules>";

// What a rules file may cost, checked before anything is compiled: a reload must never
// hurt the running daemon, and an operator's file is not trusted to be small.
/// The largest rules file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most rules an operator's file may hold.
pub const MAX_RULES: usize = 1000;
/// The longest regex of one rule, in bytes.
pub const MAX_REGEX_BYTES: usize = 4096;
/// The most memory one rule's compiled regex may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The most memory all rules compiled together may take.
const SET_SIZE_LIMIT: usize = 32 << 20;
/// The lazy DFA's cache for the whole set: with the default (2 MiB) a set of this many
/// rules over long kernel lines fills it again and again, and the regex engine falls back
/// to a slower one (measured: 5x slower).
const SET_DFA_CACHE: usize = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    class: Class,
    severity: Option<Severity>,
    action: Option<Action>,
    regex: String,
    #[serde(default)]
    examples: Vec<Example>,
}

/// A real line the rule must match, and where it was seen.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub line: String,
    #[serde(default)]
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub class: Class,
    pub severity: Severity,
    pub action: Action,
    /// The rule's pattern, checked to compile alone and as part of the set. Only the
    /// set is kept compiled: 63 compiled regexes kept for their text took 2.8 MiB, most
    /// of the daemon's heap (BENCHMARKS.md, footprint).
    pub regex: String,
    pub examples: Vec<Example>,
    /// The file the rule came from.
    pub origin: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error(transparent)]
    Syntax(#[from] crate::input_file::TomlError),
    #[error("{file}: rule {id}: invalid regex: {message}")]
    Regex {
        file: String,
        id: String,
        message: String,
    },
    #[error(
        "{file}: rule {id}: needs at least one example line (examples = [{{ line = \"...\", source = \"...\" }}])"
    )]
    NoExamples { file: String, id: String },
    #[error("{file}: rule id {id} is used twice")]
    DuplicateId { file: String, id: String },
    #[error("{file}: disable names {id}, which is not a built-in rule")]
    UnknownDisable { file: String, id: String },
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{file}: {count} rules: at most {MAX_RULES} are taken")]
    TooManyRules { file: String, count: usize },
    #[error(
        "{file}: rule {id}: its regex is {len} bytes long, at most {MAX_REGEX_BYTES} are taken"
    )]
    RegexTooLong {
        file: String,
        id: String,
        len: usize,
    },
    #[error(
        "{file}: the rules compiled together are too large ({message}): fewer or simpler rules"
    )]
    SetTooBig { file: String, message: String },
}

fn parse_file(text: &str, file: &str) -> Result<RuleFile, RulesError> {
    Ok(crate::input_file::parse_toml(text, file)?)
}

fn compile(spec: RuleSpec, file: &str) -> Result<Rule, RulesError> {
    if spec.regex.len() > MAX_REGEX_BYTES {
        return Err(RulesError::RegexTooLong {
            file: file.to_owned(),
            id: spec.id,
            len: spec.regex.len(),
        });
    }
    RegexBuilder::new(&spec.regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RulesError::Regex {
            file: file.to_owned(),
            id: spec.id.clone(),
            message: e.to_string(),
        })?;
    // The set matches bytes with ASCII classes (see RuleSet::new): a pattern that needs
    // Unicode classes is refused here, by rule, not later as a set that will not build.
    regex::bytes::RegexBuilder::new(&spec.regex)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RulesError::Regex {
            file: file.to_owned(),
            id: spec.id.clone(),
            message: format!("{e} (rules match ASCII character classes: \\w, \\d, \\s)"),
        })?;
    if spec.examples.is_empty() {
        return Err(RulesError::NoExamples {
            file: file.to_owned(),
            id: spec.id,
        });
    }
    Ok(Rule {
        severity: spec.severity.unwrap_or(spec.class.default_severity()),
        action: spec.action.unwrap_or(spec.class.default_action()),
        id: spec.id,
        class: spec.class,
        regex: spec.regex,
        examples: spec.examples,
        origin: file.to_owned(),
    })
}

fn compile_all(specs: Vec<RuleSpec>, file: &str) -> Result<Vec<Rule>, RulesError> {
    if specs.len() > MAX_RULES {
        return Err(RulesError::TooManyRules {
            file: file.to_owned(),
            count: specs.len(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    specs
        .into_iter()
        .map(|s| {
            if !seen.insert(s.id.clone()) {
                return Err(RulesError::DuplicateId {
                    file: file.to_owned(),
                    id: s.id,
                });
            }
            compile(s, file)
        })
        .collect()
}

/// What a line is, by the first rule that matches it.
#[derive(Clone, Copy, Debug)]
pub struct Classification<'r> {
    pub class: Class,
    pub severity: Severity,
    pub action: Action,
    /// The rule that matched, if any.
    pub rule: Option<&'r Rule>,
}

/// The lowest console level (err) at which a line no rule knows is counted.
const UNMATCHED_LEVEL: u8 = 3;

impl Classification<'_> {
    pub fn rule_id(&self) -> Option<&str> {
        self.rule.map(|r| r.id.as_str())
    }

    /// Whether this is a line at console `level` err or worse (0-3) that no rule knows
    /// (a rule of class `none` knows its lines): the sign of a rule that is missing.
    pub fn is_unmatched_error(&self, level: u8) -> bool {
        self.rule.is_none() && level <= UNMATCHED_LEVEL
    }
}

const UNMATCHED: Classification<'static> = Classification {
    class: Class::None,
    severity: Severity::Info,
    action: Action::None,
    rule: None,
};

/// How rsyslog escapes a newline inside a message.
const RSYSLOG_NEWLINE: &str = "#012";

/// Rules in priority order, with one automaton over all of them.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    set: RegexSet,
}

/// One failure of the rule test bench.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchFailure(pub String);

impl RuleSet {
    /// All `rules` in one automaton. Regexes that compile one by one may still be too
    /// large together: that is an error (of `file`), not a panic.
    fn new(rules: Vec<Rule>, file: &str) -> Result<Self, RulesError> {
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_DFA_CACHE)
            // Kernel text is ASCII: ASCII classes keep the automaton small and fast (a
            // Unicode \w alone is hundreds of ranges). Non-ASCII bytes still match `.`,
            // `\S` and negated classes.
            .unicode(false)
            .build()
            .map_err(|e| RulesError::SetTooBig {
                file: file.to_owned(),
                message: e.to_string(),
            })?;
        Ok(RuleSet { rules, set })
    }

    /// The built-in rules alone.
    pub fn builtin() -> Self {
        let file = parse_file(BUILTIN, BUILTIN_NAME).expect("built-in rules parse (tested)");
        let rules = compile_all(file.rules, BUILTIN_NAME).expect("built-in rules compile (tested)");
        RuleSet::new(rules, BUILTIN_NAME).expect("built-in rules fit together (tested)")
    }

    /// The operator's rules from `text` (named `file` in errors), then the built-ins they
    /// neither replace nor disable.
    pub fn with_user_text(text: &str, file: &str) -> Result<Self, RulesError> {
        let user = parse_file(text, file)?;
        let builtin = RuleSet::builtin().rules;
        for id in &user.disable {
            if !builtin.iter().any(|r| &r.id == id) {
                return Err(RulesError::UnknownDisable {
                    file: file.to_owned(),
                    id: id.clone(),
                });
            }
        }
        let mut rules = compile_all(user.rules, file)?;
        let taken: std::collections::HashSet<String> = rules
            .iter()
            .map(|r| r.id.clone())
            .chain(user.disable.iter().cloned())
            .collect();
        rules.extend(builtin.into_iter().filter(|r| !taken.contains(&r.id)));
        RuleSet::new(rules, file)
    }

    /// As [`RuleSet::with_user_text`], reading the file.
    pub fn with_user_file(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = crate::input_file::read_regular_text(path, MAX_FILE_BYTES).map_err(|e| {
            RulesError::Io {
                file: file.clone(),
                message: e.to_string(),
            }
        })?;
        Self::with_user_text(&text, &file)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Classify message text (prefixes already stripped). Leading blanks are not the
    /// kernel's in a header line (its continuation lines are indented, and no rule is
    /// for them), so rules see the text without them.
    pub fn classify_text(&self, text: &str) -> Classification<'_> {
        let text = text.trim_start();
        match self.set.matches(text.as_bytes()).iter().next() {
            Some(i) => {
                let r = &self.rules[i];
                Classification {
                    class: r.class,
                    severity: r.severity,
                    action: r.action,
                    rule: Some(r),
                }
            }
            None => UNMATCHED,
        }
    }

    /// Classify a line as found in the wild, prefixes and all. rsyslog writes the
    /// newlines of a multi-line record as `#012`: each part is a line of its own, and the
    /// first that a rule of a problem class knows decides.
    pub fn classify(&self, line: &str) -> Classification<'_> {
        let first = self.classify_text(prefix::strip(line).text);
        if first.class != Class::None || !line.contains(RSYSLOG_NEWLINE) {
            return first;
        }
        line.split(RSYSLOG_NEWLINE)
            .skip(1)
            .map(|part| self.classify_text(prefix::strip(part).text))
            .find(|c| c.class != Class::None)
            .unwrap_or(first)
    }

    /// The rule test bench: every rule's examples are decided by that rule (no rule of
    /// higher priority takes them), and every line of `must_catch` is caught by some
    /// rule of a class other than `none`. Lines of `must_catch` may be `# comments`.
    pub fn test_bench(&self, must_catch: Option<(&str, &str)>) -> Vec<BenchFailure> {
        let mut failures = Vec::new();
        for rule in &self.rules {
            for ex in &rule.examples {
                let got = self.classify(&ex.line);
                if got.rule_id() != Some(rule.id.as_str()) {
                    let by = match got.rule {
                        Some(other) => {
                            format!("rule {} ({}) from {}", other.id, other.class, other.origin)
                        }
                        None => "no rule".to_owned(),
                    };
                    failures.push(BenchFailure(format!(
                        "{}: rule {} ({}): example is decided by {by}: {}",
                        rule.origin, rule.id, rule.class, ex.line
                    )));
                }
            }
        }
        if let Some((name, text)) = must_catch {
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let got = self.classify(line);
                if got.class == Class::None {
                    let why = got
                        .rule_id()
                        .map(|id| format!("silenced by rule {id}"))
                        .unwrap_or_else(|| "no rule matches".into());
                    failures.push(BenchFailure(format!(
                        "{name}:{}: not caught ({why}): {line}",
                        n + 1
                    )));
                }
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_compile_and_pass_their_own_bench() {
        let rules = RuleSet::builtin();
        assert!(rules.rules().len() >= 40, "{} rules", rules.rules().len());
        let failures = rules.test_bench(None);
        assert!(failures.is_empty(), "{failures:#?}");
        for r in rules.rules() {
            assert!(
                r.examples.iter().all(|e| !e.source.is_empty()),
                "rule {} lacks a source",
                r.id
            );
        }
    }

    #[test]
    fn every_class_has_a_builtin_rule() {
        let rules = RuleSet::builtin();
        for class in Class::ALL {
            if class == Class::None {
                continue;
            }
            assert!(
                rules.rules().iter().any(|r| r.class == class),
                "no rule for {class}"
            );
        }
    }

    const USER: &str = r#"
disable = ["ext4-error"]

[[rule]]
id = "business-db-io"
class = "fs_io"
action = "stop-heartbeat"
regex = 'XFS \(dm-7\): metadata I/O error'
examples = [{ line = "XFS (dm-7): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x2 len 1 error 5", source = "our db volume" }]

[[rule]]
id = "ignore-test-bugs"
class = "none"
regex = '^watchdog-test: '
examples = [{ line = "watchdog-test: BUG: not real", source = "our tests" }]
"#;

    #[test]
    fn user_rules_take_priority_override_and_silence() {
        let rules = RuleSet::with_user_text(USER, "user.toml").unwrap();
        let c = rules.classify("XFS (dm-7): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x2 len 1 error 5");
        assert_eq!(
            (c.class, c.action, c.rule_id()),
            (Class::FsIo, Action::StopHeartbeat, Some("business-db-io"))
        );
        let c = rules.classify("watchdog-test: BUG: not real");
        assert_eq!(
            (c.class, c.rule_id()),
            (Class::None, Some("ignore-test-bugs"))
        );
        let c = rules.classify("EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0");
        assert_eq!(c.class, Class::None, "disabled built-in");
        // Silencing a built-in's example is reported by the bench, so the operator sees it.
        let failures = rules.test_bench(None);
        assert_eq!(
            failures,
            vec![BenchFailure(
                "<built-in rules>: rule bug-generic (bug): example is decided by rule ignore-test-bugs (none) from user.toml: watchdog-test: BUG: simulated kernel fault".into()
            )]
        );
    }

    #[test]
    fn a_rule_that_needs_unicode_classes_is_refused_by_name() {
        let text = rules_file(std::iter::once(r"\p{Greek}+ panic".to_owned()));
        let e = RuleSet::with_user_text(&text, "greek.toml").unwrap_err();
        assert!(
            e.to_string().starts_with("greek.toml: rule r0: ")
                && e.to_string()
                    .contains("rules match ASCII character classes"),
            "{e}"
        );
    }

    #[test]
    fn rule_file_errors_say_where() {
        let e = RuleSet::with_user_text("[[rule]]\nid = \"x\"\nclass = \"bogus\"\n", "r.toml")
            .unwrap_err();
        let RulesError::Syntax(crate::input_file::TomlError {
            line,
            column,
            message,
            ..
        }) = &e
        else {
            panic!("{e}")
        };
        assert_eq!((*line, *column), (3, 9), "{e}");
        assert!(message.contains("unknown variant `bogus`"), "{e}");
        assert!(e.to_string().starts_with("r.toml:3:9: "), "{e}");

        let e = RuleSet::with_user_text(
            "[[rule]]\nid = \"x\"\nclass = \"bug\"\nregex = 'a'\ncolour = 1\n",
            "r.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("r.toml:5:1: unknown field `colour`"),
            "{e}"
        );

        let e = RuleSet::with_user_text(
            "[[rule]]\nid = \"x\"\nclass = \"bug\"\nregex = '('\nexamples = [{line = \"(\"}]\n",
            "r.toml",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("r.toml: rule x: invalid regex"),
            "{e}"
        );

        let e = RuleSet::with_user_text(
            "[[rule]]\nid = \"x\"\nclass = \"bug\"\nregex = 'a'\n",
            "r.toml",
        )
        .unwrap_err();
        assert_eq!(
            e,
            RulesError::NoExamples {
                file: "r.toml".into(),
                id: "x".into()
            }
        );

        let e = RuleSet::with_user_text("disable = [\"nope\"]\n", "r.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.toml: disable names nope, which is not a built-in rule"
        );
    }

    #[test]
    fn bench_reports_shadowed_examples_and_missed_lines() {
        let text = "[[rule]]\nid = \"greedy\"\nclass = \"warning\"\nregex = 'BUG'\nexamples = [{ line = \"BUG here\", source = \"t\" }]\n";
        let rules = RuleSet::with_user_text(text, "g.toml").unwrap();
        let failures = rules.test_bench(Some(("lines.txt", "# c\nall is well\n")));
        assert!(
            failures
                .iter()
                .any(|f| f.0.contains("rule x86-null-deref")
                    && f.0.contains("decided by rule greedy")),
            "{failures:#?}"
        );
        assert!(
            failures
                .iter()
                .any(|f| f.0 == "lines.txt:2: not caught (no rule matches): all is well"),
            "{failures:#?}"
        );
    }

    fn rules_file(regexes: impl Iterator<Item = String>) -> String {
        regexes
            .enumerate()
            .map(|(i, re)| {
                format!(
                    "[[rule]]\nid = \"r{i}\"\nclass = \"bug\"\nregex = '{re}'\nexamples = [{{ line = \"x\", source = \"test\" }}]\n"
                )
            })
            .collect()
    }

    #[test]
    fn rules_that_compile_one_by_one_but_not_together_are_an_error_not_a_panic() {
        // Each of these is under the limit of one rule (8,000 states); 64 together are not.
        let text = rules_file((0..64).map(|i| format!(r"(?:(?:[a-c]{{20}}){{20}}){{20}}x{i}")));
        let e = RuleSet::with_user_text(&text, "big.toml").unwrap_err();
        assert!(
            matches!(&e, RulesError::SetTooBig { file, .. } if file == "big.toml"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("big.toml: the rules compiled together are too large")
        );
    }

    #[test]
    fn what_a_rules_file_may_cost_is_bounded_before_compiling() {
        let huge = "a".repeat(10 << 20);
        let started = std::time::Instant::now();
        let e =
            RuleSet::with_user_text(&rules_file(std::iter::once(huge)), "huge.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "huge.toml: rule r0: its regex is {} bytes long, at most 4096 are taken",
                10 << 20
            )
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let many = rules_file((0..MAX_RULES + 1).map(|i| format!("line {i}")));
        assert_eq!(
            RuleSet::with_user_text(&many, "many.toml")
                .unwrap_err()
                .to_string(),
            "many.toml: 1001 rules: at most 1000 are taken"
        );
        let one_too_big = rules_file(std::iter::once(r"\w{40}".to_owned()));
        assert!(matches!(
            RuleSet::with_user_text(&one_too_big, "one.toml").unwrap_err(),
            RulesError::Regex { .. }
        ));
    }
}
