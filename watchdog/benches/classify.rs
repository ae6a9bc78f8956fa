//! Classification throughput: a 100,000-line kernel log (real lines from the corpora,
//! about 1 in 20 a problem line, the rest benign, with dmesg prefixes), classified:
//! - baseline: each rule's regex tried in priority order until one matches, as
//!   node-problem-detector does with its pattern list;
//! - watchdog: `RuleSet::classify` (prefix stripping, then one RegexSet pass);
//! - assembly: `assemble_log`, classification plus incident assembly.
//!
//! Medians of 7 interleaved rounds. Both classifiers must agree on every line.
use std::time::{Duration, Instant};

use watchdog::judging::kmsg::{Class, RuleSet, prefix, report::assemble_log};

const LINES: usize = 100_000;
const ROUNDS: usize = 7;

/// (problem lines, benign lines) of the hand-picked corpus (`real`: false, the input of
/// the earlier runs) or of the real-world one (`real`: true).
fn corpus_lines(real: bool) -> (Vec<String>, Vec<String>) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if real {
        files = std::fs::read_dir(format!("{root}/real"))
            .expect("the real corpus")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tsv"))
            .collect();
        files.sort();
    } else {
        files.push(format!("{root}/lines.tsv").into());
    }
    let mut problems = Vec::new();
    let mut benign = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = l.splitn(3, '\t');
            let (Some(class), Some(_), Some(line)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            // One kernel line per log line (rsyslog's #012 joins several).
            if line.contains("#012") {
                continue;
            }
            if class == "none" {
                benign.push(line.to_owned())
            } else {
                problems.push(line.to_owned())
            }
        }
    }
    (problems, benign)
}

fn build_log(real: bool) -> Vec<String> {
    let (problems, benign) = corpus_lines(real);
    (0..LINES)
        .map(|i| {
            let text = if i % 20 == 0 {
                &problems[(i / 20) % problems.len()]
            } else {
                &benign[i % benign.len()]
            };
            let text = prefix::strip(text).text;
            format!("[{:>5}.{:06}] {text}", i / 1000, i % 1_000_000)
        })
        .collect()
}

/// Each rule's regex compiled alone, in priority order, with its class.
fn one_by_one(rules: &RuleSet) -> Vec<(regex::Regex, Class)> {
    rules
        .rules()
        .iter()
        .map(|r| {
            (
                regex::Regex::new(&r.regex).expect("built-in rules compile"),
                r.class,
            )
        })
        .collect()
}

fn baseline(rules: &[(regex::Regex, Class)], line: &str) -> Class {
    let text = prefix::strip(line).text;
    rules
        .iter()
        .find(|(regex, _)| regex.is_match(text))
        .map_or(Class::None, |(_, class)| *class)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn per_sec(d: Duration) -> f64 {
    LINES as f64 / d.as_secs_f64()
}

fn main() {
    for (real, name) in [
        (
            false,
            "the hand-picked corpus (lines.tsv, the input of earlier runs)",
        ),
        (
            true,
            "the real-world corpus (corpus/real, longer lines, every pipeline's prefixes)",
        ),
    ] {
        run(&build_log(real), name);
    }
}

fn run(log: &[String], name: &str) {
    let rules = RuleSet::builtin();
    let singles = one_by_one(&rules);
    let joined = log.join("\n");
    // Correctness first: the two classifiers agree on every line.
    for line in log {
        assert_eq!(
            baseline(&singles, line),
            rules.classify(line).class,
            "{line}"
        );
    }
    let (mut base, mut ours, mut asm, mut strip) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut sink = 0usize;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        sink += log
            .iter()
            .filter(|l| baseline(&singles, l) != Class::None)
            .count();
        base.push(t.elapsed());
        let t = Instant::now();
        sink += log
            .iter()
            .filter(|l| rules.classify(l).class != Class::None)
            .count();
        ours.push(t.elapsed());
        let t = Instant::now();
        sink += assemble_log(&rules, &joined).len();
        asm.push(t.elapsed());
        let t = Instant::now();
        sink += log
            .iter()
            .map(|l| prefix::strip(l).text.len())
            .sum::<usize>();
        strip.push(t.elapsed());
    }
    let (b, o, a, st) = (median(base), median(ours), median(asm), median(strip));
    println!(
        "classify {LINES} lines of {name} ({} rules), median of {ROUNDS} rounds:",
        rules.rules().len()
    );
    println!(
        "  baseline (regex per rule, in order): {:>8.1} ms  {:>10.0} lines/s",
        b.as_secs_f64() * 1e3,
        per_sec(b)
    );
    println!(
        "  watchdog (RegexSet, one pass):       {:>8.1} ms  {:>10.0} lines/s  ({:.2}x baseline)",
        o.as_secs_f64() * 1e3,
        per_sec(o),
        b.as_secs_f64() / o.as_secs_f64()
    );
    println!(
        "  classify + assemble incidents:       {:>8.1} ms  {:>10.0} lines/s",
        a.as_secs_f64() * 1e3,
        per_sec(a)
    );
    println!(
        "  of which prefix stripping alone:     {:>8.1} ms  {:>10.0} lines/s",
        st.as_secs_f64() * 1e3,
        per_sec(st)
    );
    std::hint::black_box(sink);
}
