//! A labelled corpus of kernel lines, and how well the rules do on it: recall per class
//! (problem lines classified right) and false alarms (benign lines given a problem
//! class). Pure; `wdctl rules test --corpus` and the corpus tests run it.
//!
//! Format (`*.tsv`): `class<TAB>source<TAB>line`, `#` comments and blank lines skipped.
use std::{collections::BTreeMap, fmt};

use super::{Class, RuleSet};

/// One labelled line, and where it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labelled {
    pub class: Class,
    pub source: String,
    pub line: String,
    /// `file:line` of the row.
    pub at: String,
}

/// Parse one corpus file (`name` for errors).
pub fn parse(name: &str, text: &str) -> Result<Vec<Labelled>, String> {
    let mut out = Vec::new();
    for (n, row) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        if row.trim().is_empty() || row.starts_with('#') {
            continue;
        }
        let mut fields = row.splitn(3, '\t');
        let (Some(class), Some(source), Some(line)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("{at}: expected class<TAB>source<TAB>line"));
        };
        let class = Class::ALL
            .into_iter()
            .find(|c| c.as_str() == class)
            .ok_or_else(|| {
                format!(
                    "{at}: unknown class '{class}' (one of {})",
                    Class::ALL.map(|c| c.as_str()).join(", ")
                )
            })?;
        out.push(Labelled {
            class,
            source: source.to_owned(),
            line: line.to_owned(),
            at,
        });
    }
    Ok(out)
}

/// A line the rules got wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    pub want: Labelled,
    pub got: Class,
    pub rule: Option<String>,
}

/// What the rules did on a corpus.
#[derive(Debug, Default)]
pub struct Score {
    /// Per labelled class: (classified right, lines).
    pub per_class: BTreeMap<Class, (usize, usize)>,
    /// Problem lines given `none` or another class.
    pub misses: Vec<Miss>,
    /// Benign lines given a problem class.
    pub false_alarms: Vec<Miss>,
}

impl Score {
    /// Problem lines: (classified right, all).
    fn problems(&self) -> (usize, usize) {
        self.per_class
            .iter()
            .filter(|(c, _)| **c != Class::None)
            .fold((0, 0), |(r, t), (_, (cr, ct))| (r + cr, t + ct))
    }

    /// Problem lines classified right, over all problem lines (1.0 if there are none).
    pub fn recall(&self) -> f64 {
        let (right, total) = self.problems();
        if total == 0 {
            1.0
        } else {
            right as f64 / total as f64
        }
    }
}

/// Classify every line of `corpus` with `rules`.
pub fn score(rules: &RuleSet, corpus: &[Labelled]) -> Score {
    let mut s = Score::default();
    for l in corpus {
        let c = rules.classify(&l.line);
        let entry = s.per_class.entry(l.class).or_default();
        entry.1 += 1;
        if c.class == l.class {
            entry.0 += 1;
            continue;
        }
        let miss = Miss {
            want: l.clone(),
            got: c.class,
            rule: c.rule_id().map(str::to_owned),
        };
        if l.class == Class::None {
            s.false_alarms.push(miss);
        } else {
            s.misses.push(miss);
        }
    }
    s
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>6} {:>6} {:>8}",
            "class", "lines", "right", "recall"
        )?;
        for (class, (right, total)) in &self.per_class {
            let pct = 100.0 * *right as f64 / (*total).max(1) as f64;
            writeln!(
                f,
                "{:<14} {total:>6} {right:>6} {pct:>7.1}%",
                class.as_str()
            )?;
        }
        let (_, problems) = self.problems();
        writeln!(
            f,
            "problem lines: {problems}, recall {:.1}%; benign lines alerted: {}",
            100.0 * self.recall(),
            self.false_alarms.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_and_bad_rows_say_where() {
        let c = parse(
            "c.tsv",
            "# comment\n\noops\tsrc\tOops: 0000 [#1] SMP\nnone\tsrc\ta\tb\n",
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].class, c[0].at.as_str()), (Class::Oops, "c.tsv:3"));
        assert_eq!(c[1].line, "a\tb");
        assert_eq!(
            parse("c.tsv", "oops only-two\n").unwrap_err(),
            "c.tsv:1: expected class<TAB>source<TAB>line"
        );
        assert!(
            parse("c.tsv", "opps\ts\tl\n")
                .unwrap_err()
                .starts_with("c.tsv:1: unknown class 'opps' (one of oops, bug")
        );
    }

    #[test]
    fn the_score_counts_recall_and_false_alarms() {
        let corpus = parse(
            "c.tsv",
            "oops\ts\tOops: 0000 [#1] SMP\npanic\ts\tnothing a rule knows\nnone\ts\tKernel panic - not syncing: Fatal exception\nnone\ts\tbenign\n",
        )
        .unwrap();
        let s = score(&RuleSet::builtin(), &corpus);
        assert_eq!(s.per_class[&Class::Oops], (1, 1));
        assert_eq!(s.per_class[&Class::Panic], (0, 1));
        assert_eq!(s.per_class[&Class::None], (1, 2));
        assert_eq!(s.misses.len(), 1);
        assert_eq!(s.false_alarms[0].got, Class::Panic);
        assert!((s.recall() - 0.5).abs() < 1e-9);
        let text = s.to_string();
        assert!(
            text.contains("recall 50.0%; benign lines alerted: 1"),
            "{text}"
        );
    }
}
