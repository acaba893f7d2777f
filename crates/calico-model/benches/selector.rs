//! Selector and label-index figures (plain `main`, `harness = false`):
//! `cargo bench -p calico-model --bench selector`.
//!
//! Prints one line per figure with its target. The workload is a synthetic cluster: 100,000
//! endpoints in 200 namespaces (namespace labels inherited from a per-namespace profile), and
//! 1,000 selectors shaped like real policy and rule selectors (single value, value sets,
//! inherited namespace labels, label presence, a few full scans).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use calico_model::labelindex::{LabelIndex, LabelMap};
use calico_model::selector::{Selector, parse};

const LABEL_SETS: u32 = 100_000;
const SELECTORS: u32 = 1_000;
const NAMESPACES: u32 = 200;
const APPS: u32 = 2_000;
const CHANGES: usize = 1_000;

/// Deterministic xorshift generator (no extra dependency, same figures run to run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

fn endpoint_labels(i: u32, rng: &mut Rng) -> LabelMap {
    let tiers = ["frontend", "backend", "db"];
    let mut l = BTreeMap::new();
    l.insert("app".to_string(), format!("app{}", rng.below(APPS)));
    l.insert("tier".to_string(), tiers[rng.below(3) as usize].to_string());
    l.insert("version".to_string(), format!("v{}", rng.below(5)));
    l.insert(
        "projectcalico.org/namespace".to_string(),
        format!("ns{}", i % NAMESPACES),
    );
    l.insert(
        "projectcalico.org/orchestrator".to_string(),
        "k8s".to_string(),
    );
    l.insert(
        "pod-template-hash".to_string(),
        format!("{:08x}", rng.next() as u32),
    );
    if rng.below(100) == 0 {
        l.insert("canary".to_string(), "true".to_string());
    }
    l
}

fn profile_labels(ns: u32) -> LabelMap {
    BTreeMap::from([
        ("pcns.projectcalico.org/name".to_string(), format!("ns{ns}")),
        ("pcns.team".to_string(), format!("team{}", ns % 20)),
    ])
}

fn selector_text(i: u32, rng: &mut Rng) -> String {
    match i % 20 {
        // Policy selectors scoped to a namespace.
        0..=7 => format!(
            "(app == 'app{}') && projectcalico.org/namespace == 'ns{}'",
            rng.below(APPS),
            rng.below(NAMESPACES)
        ),
        8..=11 => format!(
            "app in {{'app{}', 'app{}', 'app{}'}} && tier != 'db'",
            rng.below(APPS),
            rng.below(APPS),
            rng.below(APPS)
        ),
        // Rule selectors on inherited namespace labels.
        12..=14 => format!(
            "pcns.projectcalico.org/name == 'ns{}' && tier == 'backend'",
            rng.below(NAMESPACES)
        ),
        15..=16 => format!(
            "has(canary) && version in {{'v{}', 'v{}'}}",
            rng.below(5),
            rng.below(5)
        ),
        17..=18 => format!(
            "pcns.team == 'team{}' && app starts with 'app1'",
            rng.below(20)
        ),
        // No usable restriction: evaluated against every endpoint (0.5% of selectors).
        _ if i % 200 == 199 => {
            format!("tier not in {{'frontend', 'backend'}} && version != 'v{i}'")
        }
        // No common restriction, but each `||` branch has one (filed under both).
        _ => format!(
            "!has(canary) && app == 'app{}' || version == 'v9{}'",
            rng.below(APPS),
            i
        ),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// This thread's scheduler statistics from `/proc/thread-self/schedstat`: time on a CPU and
/// the number of times it was scheduled. Wall time is what the targets are about, but other
/// builds may share the machine's two cores, so the figures are printed with CPU time next to
/// them and the latency percentiles also over the changes during which the thread was never
/// switched out.
fn schedstat() -> Option<(Duration, u64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut it = s.split_whitespace();
    let run_ns: u64 = it.next()?.parse().ok()?;
    let _wait_ns = it.next()?;
    let slices: u64 = it.next()?.parse().ok()?;
    Some((Duration::from_nanos(run_ns), slices))
}

/// CPU time this thread has used: from `schedstat` (nanoseconds), else from
/// `/proc/self/stat` at 100 ticks/s.
fn cpu_time() -> Option<Duration> {
    if let Some((run, _)) = schedstat() {
        return Some(run);
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, see proc(5)).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn line(name: &str, value: String, target: &str, ok: bool) {
    let verdict = if ok { "ok" } else { "MISSED" };
    println!("{name:<48} {value:>16}   target {target:<14} {verdict}");
}

fn bench_evaluate() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let sels: Vec<Selector> = (0..SELECTORS)
        .map(|i| parse(&selector_text(i, &mut rng)).expect("bench selector"))
        .collect();
    let labels: Vec<LabelMap> = (0..1_000).map(|i| endpoint_labels(i, &mut rng)).collect();
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut hits: u64 = 0;
    while start.elapsed() < Duration::from_millis(1_000) {
        for l in &labels {
            for s in sels.iter().step_by(7) {
                hits += u64::from(black_box(s).evaluate(black_box(l)));
                n += 1;
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    black_box(hits);
    line(
        "selector evaluations/s",
        format!("{:.1} M/s", rate / 1e6),
        ">= 1 M/s",
        rate >= 1e6,
    );

    let texts: Vec<String> = (0..SELECTORS).map(|i| selector_text(i, &mut rng)).collect();
    let start = Instant::now();
    let mut parsed: u64 = 0;
    while start.elapsed() < Duration::from_millis(500) {
        for t in &texts {
            black_box(parse(black_box(t)).is_ok());
            parsed += 1;
        }
    }
    let rate = parsed as f64 / start.elapsed().as_secs_f64();
    line(
        "selector parses/s",
        format!("{:.0} k/s", rate / 1e3),
        ">= 100 k/s",
        rate >= 1e5,
    );
}

type Index = LabelIndex<u32, u32, u32>;

fn build(selectors_first: bool) -> (Index, Duration, Duration, usize) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let sels: Vec<Selector> = (0..SELECTORS)
        .map(|i| parse(&selector_text(i, &mut rng)).expect("bench selector"))
        .collect();
    let sets: Vec<(LabelMap, u32)> = (0..LABEL_SETS)
        .map(|i| (endpoint_labels(i, &mut rng), i % NAMESPACES))
        .collect();
    let mut idx = Index::new();
    let mut events = 0usize;
    let cpu_start = cpu_time();
    let start = Instant::now();
    for ns in 0..NAMESPACES {
        events += idx.update_parent(ns, profile_labels(ns)).len();
    }
    if selectors_first {
        for (i, s) in sels.into_iter().enumerate() {
            events += idx.update_selector(i as u32, s).len();
        }
        for (i, (l, p)) in sets.iter().enumerate() {
            events += idx.update_labels(i as u32, l, vec![*p]).len();
        }
    } else {
        for (i, (l, p)) in sets.iter().enumerate() {
            events += idx.update_labels(i as u32, l, vec![*p]).len();
        }
        let sets_done = start.elapsed();
        for (i, s) in sels.into_iter().enumerate() {
            events += idx.update_selector(i as u32, s).len();
        }
        println!(
            "  (label sets {:.0} ms, then selectors {:.0} ms)",
            sets_done.as_secs_f64() * 1e3,
            (start.elapsed() - sets_done).as_secs_f64() * 1e3
        );
    }
    let took = start.elapsed();
    let cpu = match (cpu_start, cpu_time()) {
        (Some(a), Some(b)) => b - a,
        _ => took,
    };
    (idx, took, cpu, events)
}

/// Prints an initial-match figure: wall time against the target, CPU time beside it.
fn initial_line(order: &str, took: Duration, cpu: Duration) {
    line(
        &format!("index initial match 100k sets x 1k sels ({order})"),
        format!("{:.0} ms", took.as_secs_f64() * 1e3),
        "<= 1000 ms",
        took <= Duration::from_secs(1),
    );
    line(
        "  same, cpu time of this thread",
        format!("{:.0} ms", cpu.as_secs_f64() * 1e3),
        "<= 1000 ms",
        cpu <= Duration::from_secs(1),
    );
}

fn bench_index() {
    let (idx, took, cpu, events) = build(false);
    initial_line("sets 1st", took, cpu);
    drop(idx);
    let (mut idx, took, cpu, events2) = build(true);
    initial_line("sels 1st", took, cpu);
    assert_eq!(
        events, events2,
        "both load orders must find the same matches"
    );
    println!(
        "  ({events} matches, {} full-scan selectors of {SELECTORS})",
        idx.num_full_scan_selectors()
    );

    // One label change at a time on random endpoints: a new app value, a canary toggle or a
    // tier move; each call returns its events.
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let mut times = Vec::with_capacity(CHANGES);
    let mut undisturbed = Vec::with_capacity(CHANGES);
    let mut by_kind: [Vec<(Duration, usize)>; 3] = Default::default();
    let mut changed_events = 0usize;
    for _ in 0..CHANGES {
        let id = rng.below(LABEL_SETS);
        let mut labels = idx
            .effective_labels(&id)
            .map(|e| e.to_map())
            .unwrap_or_default();
        labels.retain(|k, _| !k.starts_with("pcns."));
        let kind = rng.below(3);
        match kind {
            0 => {
                labels.insert("app".into(), format!("app{}", rng.below(APPS)));
            }
            1 => {
                if labels.remove("canary").is_none() {
                    labels.insert("canary".into(), "true".into());
                }
            }
            _ => {
                labels.insert(
                    "tier".into(),
                    ["frontend", "backend", "db"][rng.below(3) as usize].into(),
                );
            }
        }
        let parent = id % NAMESPACES;
        let parents = vec![parent];
        let before = schedstat();
        let start = Instant::now();
        let ev = idx.update_labels(id, &labels, parents);
        let took = start.elapsed();
        times.push(took);
        by_kind[kind as usize].push((took, ev.len()));
        if let (Some((_, a)), Some((_, b))) = (before, schedstat())
            && a == b
        {
            undisturbed.push(took);
        }
        changed_events += ev.len();
    }
    times.sort_unstable();
    let p50 = percentile(&times, 0.50);
    let p99 = percentile(&times, 0.99);
    line(
        "one label change, p50",
        format!("{:.1} us", p50.as_secs_f64() * 1e6),
        "<= 50 us",
        p50 <= Duration::from_micros(50),
    );
    line(
        "one label change, p99",
        format!("{:.1} us", p99.as_secs_f64() * 1e6),
        "<= 50 us",
        p99 <= Duration::from_micros(50),
    );
    if undisturbed.len() >= CHANGES / 2 {
        undisturbed.sort_unstable();
        let p99 = percentile(&undisturbed, 0.99);
        line(
            "  same, never switched out",
            format!("{:.1} us", p99.as_secs_f64() * 1e6),
            "<= 50 us",
            p99 <= Duration::from_micros(50),
        );
    }
    println!(
        "  ({changed_events} match events over {CHANGES} changes, {} of them never switched out)",
        undisturbed.len()
    );
    for (name, mut v) in ["new app", "canary toggle", "tier move"]
        .into_iter()
        .zip(by_kind)
    {
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        let (p99, ev) = v[((v.len() - 1) as f64 * 0.99).round() as usize];
        println!(
            "  ({name}: {} changes, p50 {:.1} us, p99 {:.1} us with {ev} events)",
            v.len(),
            v[v.len() / 2].0.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }

    // A namespace label change re-evaluates every endpoint inheriting it (500 here).
    let start = Instant::now();
    let ev = idx.update_parent(
        7,
        BTreeMap::from([(
            "pcns.projectcalico.org/name".to_string(),
            "renamed".to_string(),
        )]),
    );
    let took = start.elapsed();
    line(
        "one profile change (500 children)",
        format!("{:.2} ms", took.as_secs_f64() * 1e3),
        "(no target)",
        true,
    );
    black_box(ev);
}

fn main() {
    // `cargo bench` passes `--bench`; no other options are supported.
    println!("calico-model selector benchmark (release build)");
    bench_evaluate();
    bench_index();
}
