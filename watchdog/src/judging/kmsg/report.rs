//! Assembling the lines of one kernel report into an incident, and saying whom it is
//! about. Pure.
//!
//! A report starts at a line of a class other than `none` (its header) and takes the
//! lines that belong to it: register dumps, `CPU: N PID: N Comm: X`, `Call Trace:` and
//! its frames, until `---[ end trace ... ]---`, a quiet period, a line that is not part
//! of a report, or the next unrelated header. Lines are grouped per printing stream (the
//! printing task in the daemon, the caller id in a log), so reports printed at the same
//! time by different tasks do not mix.
use std::{collections::HashMap, sync::LazyLock};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Action, Class, Classification, RuleSet, Severity};

/// Longest report kept; the rest of a runaway report is dropped (counted in `dropped`).
pub const MAX_LINES: usize = 400;
/// Most call-trace frames kept.
pub const MAX_FRAMES: usize = 64;

/// The task in whose context a line was printed (from printk:console).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Printer {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
}

/// How a report ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// `---[ end trace ... ]---` or the last line of an OOM kill.
    Marker,
    /// No line for the quiet period.
    Quiet,
    /// A line that is not part of a report.
    Unrelated,
    /// The next report began.
    NextReport,
    /// Too many lines.
    Limit,
    /// End of input.
    Eof,
}

/// One kernel report, assembled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub class: Class,
    pub rule: Option<String>,
    pub severity: Severity,
    pub action: Action,
    pub first_line: String,
    /// Classes of further headers folded into this report (an Oops after its BUG line).
    pub also: Vec<Class>,
    /// The task the text names (`PID: N Comm: X`, `task X:N`, `[X:N]`, `Killed process
    /// N (X)`): a thread id, or a process id for OOM kills.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cpu: Option<u32>,
    /// Taint flags (`G W O`), empty when `Not tainted`.
    pub tainted: Option<String>,
    /// Faulting instruction: `RIP:` on x86, `pc :` on arm64.
    pub ip: Option<String>,
    /// Function names of the call trace, innermost first; `?` frames left out.
    pub call_trace: Vec<String>,
    pub lines: Vec<String>,
    pub dropped: usize,
    pub printer: Option<Printer>,
    /// Seconds since boot of the first line, when known.
    pub time: Option<f64>,
    pub ended_by: End,
}

/// Whom a report is about, and how we know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Thread id as the kernel named it (process id for OOM kills).
    pub pid: u32,
    pub comm: Option<String>,
    /// `printer`: the task that printed it is the task that faulted; `text`: named in it.
    pub how: String,
}

impl Subject {
    /// The subject in the daemon's ids. The printer is already; a pid from the text is
    /// the kernel's (the initial pid namespace's) and goes through `named`, which says
    /// None for a task outside what the daemon judges.
    pub fn in_view(mut self, named: impl FnOnce(u32) -> Option<u32>) -> Option<Subject> {
        if self.how != "printer" {
            self.pid = named(self.pid)?;
        }
        Some(self)
    }
}

static CPU_PID_COMM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (\S+)(?: (Not tainted|Tainted: ((?:[A-Z] *)+)))?").unwrap()
});
/// 2.6/3.x kernels: `Pid: 0, comm: swapper/0 Not tainted 3.10.0 #1`.
static OLD_PID_COMM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Pid: (\d+), comm: (\S+)(?: (Not tainted|Tainted: ((?:[A-Z] *)+)))?").unwrap()
});
static HUNG_TASK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"INFO: task (.+):(\d+) blocked").unwrap());
static SOFT_LOCKUP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"CPU#(\d+) stuck for \d+s! \[(.+):(\d+)\]").unwrap());
static OOM_KILLED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Kill(?:ed)? process (\d+) \((.+?)\)").unwrap());
static WARN_AT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"WARNING: CPU: (\d+) PID: (\d+) at").unwrap());
/// 2.6 x86 and other old die dumps: `Process swapper (pid: 1, threadinfo=c15ee000 ...)`.
static OLD_PROCESS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Process (\S+) \(pid: (\d+), ").unwrap());
/// lockdep: `kworker/u:3/1497 is trying to acquire lock:`, `X/N is trying to release
/// lock`, `X/N still has locks held!`.
static LOCKDEP_TASK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\S+)/(\d+) (?:is trying to (?:acquire|release) lock|still has locks held|\[HC\d\[\d+\]:SC\d\[\d+\]:HE\d:SE\d\] (?:takes|is trying to acquire))").unwrap()
});
static ALLOC_COMM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\S+): (?:page allocation|vmalloc)").unwrap());
static IP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(?:RIP: (?:[0-9a-f]{4}:)?|EIP: (?:[0-9a-f]{4}:)?(?:\[<[0-9a-f]+>\] )?|pc : )(\S+)",
    )
    .unwrap()
});
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:<\w+>\s*)?(?:\[<[0-9a-f]+>\]\s*)?(\?\s*)?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+").unwrap()
});
static ARM64_REG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^x\d+\s*:").unwrap());

/// Lines after a header that belong to its report whatever they say.
const HEADER_LINES: usize = 12;

/// Lines that belong to a report, though no rule matches them.
const REPORT_LINE_PREFIXES: &[&str] = &[
    "CPU: ",
    "Hardware name:",
    "RIP:",
    "RSP:",
    "RAX:",
    "RDX:",
    "RBP:",
    "R10:",
    "R13:",
    "FS:",
    "CS:",
    "CR2:",
    "DR0:",
    "DR3:",
    "DR6:",
    "Code:",
    "Call Trace:",
    "Call trace:",
    "Modules linked in:",
    "Workqueue:",
    "pc :",
    "lr :",
    "sp :",
    "pstate:",
    "#PF:",
    "PGD ",
    "P4D ",
    "PUD ",
    "PMD ",
    "PTE ",
    "task:",
    "Stack:",
    "---[ ",
    "------------[ cut here ]",
    "NMI backtrace",
    "Sending NMI",
    "irq event stamp",
    "hardirqs ",
    "softirqs ",
    "Kernel Offset:",
    "Showing ",
    "ESR ",
    "Data abort",
    "Mem abort",
    "user pgtable",
    "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\"",
    "EIP:",
    "EFLAGS:",
    "ES:",
    "Process ",
    "INFO: lockdep",
    "Tainted:",
    "Blocked by coredump",
    "rcu: ",
    "Pid: ",
    // i386 register dumps, old and new
    "EIP is at",
    "EAX:",
    "ESI:",
    "DS:",
    "CR0:",
    "eax:",
    "esi:",
    "ds:",
    // powerpc, arm, s390, mips and riscv register dumps and fault lines
    "NIP",
    "REGS:",
    "MSR:",
    "GPR",
    "CFAR:",
    "IRQMASK:",
    "LR [",
    "Instruction dump:",
    "Faulting instruction address:",
    "PC is at",
    "LR is at",
    "Backtrace:",
    "Function entered at",
    "Exception stack",
    "Krnl ",
    "epc ",
    "ra  ",
    "Status:",
    "Cause ",
    "BadVA",
    "PrId",
    "sepc:",
    "badaddr:",
    "[<",
    // lockdep's report
    "other info that might help us debug this",
    "the existing dependency chain",
    "stack backtrace:",
    "-> #",
    " Possible unsafe locking scenario",
    "*** DEADLOCK ***",
    "which lock already depends on the new lock",
    "but task is already holding lock",
    "\t",
    " ",
];

fn is_report_line(text: &str) -> bool {
    REPORT_LINE_PREFIXES.iter().any(|p| text.starts_with(p))
        || ARM64_REG.is_match(text)
        || FRAME.is_match(text)
}

fn is_end_marker(text: &str) -> bool {
    let t = text.trim();
    t.starts_with("---[ end trace") || t.starts_with("---[ end Kernel panic")
}

/// What a single line says about the task it names: (pid, comm, cpu).
fn named_task(class: Class, text: &str) -> (Option<u32>, Option<String>, Option<u32>) {
    let num = |m: Option<regex::Match<'_>>| m.and_then(|m| m.as_str().parse().ok());
    let s = |m: Option<regex::Match<'_>>| m.map(|m| m.as_str().to_owned());
    match class {
        Class::HungTask => HUNG_TASK
            .captures(text)
            .map_or((None, None, None), |c| (num(c.get(2)), s(c.get(1)), None)),
        Class::SoftLockup => SOFT_LOCKUP.captures(text).map_or((None, None, None), |c| {
            (num(c.get(3)), s(c.get(2)), num(c.get(1)))
        }),
        Class::Oom => OOM_KILLED
            .captures(text)
            .map_or((None, None, None), |c| (num(c.get(1)), s(c.get(2)), None)),
        Class::Warning => WARN_AT
            .captures(text)
            .map_or((None, None, None), |c| (num(c.get(2)), None, num(c.get(1)))),
        Class::AllocFailure => (
            None,
            ALLOC_COMM.captures(text).and_then(|c| s(c.get(1))),
            None,
        ),
        _ => (None, None, None),
    }
}

/// Whom a report (or its header alone) is about: the printing task when it is the task
/// the report is about (an oops or BUG in process context: its own `PID:` agrees, or the
/// text names no one), otherwise the task the text names.
pub fn subject(
    class: Class,
    named: Option<(u32, Option<String>)>,
    printer: Option<&Printer>,
) -> Option<Subject> {
    if class.printed_by_subject()
        && let Some(p) = printer
        && named.as_ref().is_none_or(|(pid, _)| *pid == p.tid)
    {
        return Some(Subject {
            pid: p.tid,
            comm: Some(p.comm.clone()),
            how: "printer".into(),
        });
    }
    named.map(|(pid, comm)| Subject {
        pid,
        comm,
        how: "text".into(),
    })
}

/// Whom a single header line is about (for acting at once, before the report is whole).
pub fn line_subject(class: Class, text: &str, printer: Option<&Printer>) -> Option<Subject> {
    let (pid, comm, _) = named_task(class, text);
    subject(class, pid.map(|p| (p, comm)), printer)
}

impl Report {
    /// Whom this report is about.
    pub fn subject(&self) -> Option<Subject> {
        subject(
            self.class,
            self.pid.map(|p| (p, self.comm.clone())),
            self.printer.as_ref(),
        )
    }

    /// One line for an operator.
    pub fn summary(&self) -> String {
        match (&self.comm, self.pid) {
            (Some(c), Some(p)) => format!("{}: {} ({c}:{p})", self.class, self.first_line),
            _ => format!("{}: {}", self.class, self.first_line),
        }
    }
}

struct Building {
    report: Report,
    in_trace: bool,
    last_time: Option<f64>,
}

impl Building {
    fn new(
        text: &str,
        c: super::Classification<'_>,
        time: Option<f64>,
        printer: Option<Printer>,
    ) -> Self {
        let (pid, comm, cpu) = named_task(c.class, text);
        let mut b = Building {
            report: Report {
                class: c.class,
                rule: c.rule_id().map(str::to_owned),
                severity: c.severity,
                action: c.action,
                first_line: text.to_owned(),
                also: Vec::new(),
                pid,
                comm,
                cpu,
                tainted: None,
                ip: None,
                call_trace: Vec::new(),
                lines: Vec::new(),
                dropped: 0,
                printer,
                time,
                ended_by: End::Eof,
            },
            in_trace: false,
            last_time: time,
        };
        b.add(text, time);
        b
    }

    fn add(&mut self, text: &str, time: Option<f64>) {
        self.last_time = time.or(self.last_time);
        let r = &mut self.report;
        if r.lines.len() >= MAX_LINES {
            r.dropped += 1;
            return;
        }
        r.lines.push(text.to_owned());
        // (cpu, pid, comm, "Not tainted"/"Tainted: ..", flags)
        let task_line = CPU_PID_COMM
            .captures(text)
            .map(|c| (c.get(1), c.get(2), c.get(3), c.get(4), c.get(5)))
            .or_else(|| {
                OLD_PID_COMM
                    .captures(text)
                    .map(|c| (None, c.get(1), c.get(2), c.get(3), c.get(4)))
            });
        if r.pid.is_none()
            && let Some(c) = LOCKDEP_TASK
                .captures(text)
                .or_else(|| OLD_PROCESS.captures(text))
        {
            r.pid = c[2].parse().ok();
            r.comm = Some(c[1].to_owned());
        }
        if let Some((cpu, pid, comm, taint, flags)) = task_line {
            r.cpu = r.cpu.or(cpu.and_then(|m| m.as_str().parse().ok()));
            if r.pid.is_none() {
                r.pid = pid.and_then(|m| m.as_str().parse().ok());
                r.comm = comm.map(|m| m.as_str().to_owned());
            }
            if taint.is_some() {
                r.tainted = Some(flags.map_or(String::new(), |f| {
                    f.as_str().split_whitespace().collect::<Vec<_>>().join(" ")
                }));
            }
        }
        if r.ip.is_none()
            && let Some(c) = IP.captures(text)
        {
            r.ip = Some(c[1].to_owned());
        }
        let t = text.trim_start();
        if t.starts_with("Call Trace:") || t.starts_with("Call trace:") {
            self.in_trace = true;
            return;
        }
        if self.in_trace {
            if let Some(c) = FRAME.captures(text) {
                if c.get(1).is_none() && r.call_trace.len() < MAX_FRAMES {
                    r.call_trace.push(c[2].to_owned());
                }
            } else if !(t.starts_with('<') || t.is_empty()) {
                // <TASK>, <IRQ>, </TASK> sit inside traces; anything else ends one.
                self.in_trace = false;
            }
        }
    }

    /// Whether a further header of `class` is part of this same report.
    fn absorbs(&self, c: &super::Classification<'_>) -> bool {
        let mine = self.report.class;
        match (mine, c.class) {
            // "BUG: kernel NULL pointer dereference" then "Oops: 0002 [#1]"; "kernel BUG
            // at" then "invalid opcode": one report, while still in its header lines.
            (Class::Bug | Class::Oops, Class::Bug | Class::Oops) => {
                self.report.lines.len() < HEADER_LINES
            }
            (Class::Oom, Class::Oom) | (Class::RcuStall, Class::RcuStall) => true,
            // WARN(cond, "refcount_t: underflow; ...") prints its message, then the
            // WARNING: line: one report.
            (Class::Warning, Class::Warning) => self.report.lines.len() < HEADER_LINES,
            // The panic a report ends in (panic_on_oops, hung_task_panic, softlockup_panic,
            // panic_on_oom, panic_on_warn) is its last part, not another incident.
            (
                Class::Oops
                | Class::Bug
                | Class::HungTask
                | Class::SoftLockup
                | Class::HardLockup
                | Class::RcuStall
                | Class::Warning
                | Class::Oom,
                Class::Panic,
            ) => true,
            // Repeats of one single-line error (a burst of I/O errors) are one incident.
            (Class::FsIo | Class::Hardware, _) => c.rule_id() == self.report.rule.as_deref(),
            _ => false,
        }
    }

    /// Whether `text` (classified none) continues this report.
    fn continues(&self, text: &str) -> bool {
        match self.report.class {
            // An OOM report is a header, memory tables and a task list, then the kill.
            Class::Oom => true,
            Class::FsIo | Class::Hardware => false,
            // A header is followed by lines in every architecture's and generation's own
            // words before the first one anyone could list (x86's `IP:`/`*pdpt`, arm's
            // `pgd =`, ppc's `Faulting instruction address:`, lockdep's banner, the
            // message of a WARN(cond, "...")): the stream's next lines are the report's
            // (reports of other tasks are in other streams, by caller id or printer).
            _ => self.report.lines.len() < HEADER_LINES || is_report_line(text),
        }
    }

    fn finish(mut self, end: End) -> Report {
        self.report.ended_by = end;
        self.report
    }
}

/// One line of input to the assembler.
#[derive(Clone, Debug)]
pub struct Line<'a> {
    /// The message, prefixes stripped.
    pub text: &'a str,
    /// Seconds (since boot, or any monotonic clock) when it was printed, if known.
    pub time: Option<f64>,
    /// Which printing stream it belongs to.
    pub stream: u64,
    pub printer: Option<Printer>,
}

/// Groups lines into reports.
pub struct Assembler {
    open: HashMap<u64, Building>,
    quiet: f64,
}

impl Assembler {
    /// `quiet`: seconds without a line after which an open report is complete.
    pub fn new(quiet: f64) -> Self {
        Assembler {
            open: HashMap::new(),
            quiet,
        }
    }

    /// Take one line; returns the reports it completed.
    pub fn push(&mut self, rules: &RuleSet, line: Line<'_>) -> Vec<Report> {
        let c = rules.classify_text(line.text);
        self.push_classified(&c, line)
    }

    /// Take one line that the caller has classified already (`c`, by the same rules),
    /// so a line is classified once however many places need its class.
    pub fn push_classified(&mut self, c: &Classification<'_>, line: Line<'_>) -> Vec<Report> {
        let mut done = Vec::new();
        let c = *c;
        if let (Some(b), Some(t)) = (self.open.get(&line.stream), line.time)
            && b.last_time.is_some_and(|last| t - last > self.quiet)
        {
            done.push(self.open.remove(&line.stream).unwrap().finish(End::Quiet));
        }
        if c.class != Class::None {
            if let Some(b) = self.open.get_mut(&line.stream)
                && b.absorbs(&c)
            {
                if c.class != b.report.class && !b.report.also.contains(&c.class) {
                    b.report.also.push(c.class);
                }
                b.add(line.text, line.time);
                let killed = b.report.class == Class::Oom && OOM_KILLED.is_match(line.text);
                if killed {
                    let (pid, comm, _) = named_task(Class::Oom, line.text);
                    b.report.pid = pid;
                    b.report.comm = comm;
                    done.push(self.open.remove(&line.stream).unwrap().finish(End::Marker));
                }
                return done;
            }
            if let Some(b) = self.open.remove(&line.stream) {
                done.push(b.finish(End::NextReport));
            }
            let b = Building::new(line.text, c, line.time, line.printer);
            // A lone "Killed process" line is a whole OOM report.
            if c.class == Class::Oom && OOM_KILLED.is_match(line.text) {
                done.push(b.finish(End::Marker));
            } else {
                self.open.insert(line.stream, b);
            }
            return done;
        }
        let Some(b) = self.open.get_mut(&line.stream) else {
            return done;
        };
        if is_end_marker(line.text) {
            b.add(line.text, line.time);
            done.push(self.open.remove(&line.stream).unwrap().finish(End::Marker));
        } else if b.continues(line.text) {
            b.add(line.text, line.time);
            if b.report.lines.len() >= MAX_LINES && b.report.class != Class::Oom {
                done.push(self.open.remove(&line.stream).unwrap().finish(End::Limit));
            }
        } else {
            done.push(
                self.open
                    .remove(&line.stream)
                    .unwrap()
                    .finish(End::Unrelated),
            );
        }
        done
    }

    /// Reports that have been quiet since before `now - quiet`.
    pub fn expire(&mut self, now: f64) -> Vec<Report> {
        let quiet = self.quiet;
        let stale: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, b)| b.last_time.is_some_and(|t| now - t > quiet))
            .map(|(k, _)| *k)
            .collect();
        stale
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .map(|b| b.finish(End::Quiet))
            .collect()
    }

    /// Everything still open (end of input).
    pub fn finish(&mut self) -> Vec<Report> {
        let mut v: Vec<Report> = self.open.drain().map(|(_, b)| b.finish(End::Eof)).collect();
        v.sort_by(|a, b| {
            a.time
                .partial_cmp(&b.time)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        v
    }
}

/// Assemble the reports in a whole log (dmesg, journal or /dev/kmsg text), in order.
pub fn assemble_log(rules: &RuleSet, log: &str) -> Vec<Report> {
    let mut asm = Assembler::new(2.0);
    let mut out = Vec::new();
    for raw in log.lines() {
        let s = super::prefix::strip(raw);
        let stream = match s.caller {
            Some(super::prefix::Caller::Task(t)) => u64::from(t),
            Some(super::prefix::Caller::Cpu(c)) => (1u64 << 32) | u64::from(c),
            None => 0,
        };
        out.extend(asm.push(
            rules,
            Line {
                text: s.text,
                time: s.time,
                stream,
                printer: None,
            },
        ));
    }
    out.extend(asm.finish());
    out
}
