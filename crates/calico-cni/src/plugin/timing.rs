//! Phase timings of one plugin run, for finding where the latency of ADD/DEL goes.
//!
//! With `CALICO_CNI_TIMING=1` in the plugin's environment, [`report`] prints one line to stderr
//! when the process is about to exit:
//!
//! ```text
//! calico-cni timing: cmd=ADD total=9.84ms start=0.31 runtime=0.05 ... exit=0.40
//! ```
//!
//! Each `name=ms` is the time since the previous mark; `total` is from the first mark (the top
//! of `main`) to the report. Without the variable every call is a cheap no-op (one atomic load).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The environment variable that turns the timings on.
pub const TIMING_ENV: &str = "CALICO_CNI_TIMING";

static ENABLED: AtomicBool = AtomicBool::new(false);
static MARKS: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

/// Starts the clock when `env` asks for timings (call first thing in `main`).
pub fn init(env_value: Option<&str>) {
    if env_value.is_some_and(|v| !v.is_empty() && v != "0") {
        ENABLED.store(true, Ordering::Relaxed);
        mark("start");
    }
}

/// Records the end of the phase `name` (the time since the previous mark).
pub fn mark(name: &'static str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let now = Instant::now();
    if let Ok(mut m) = MARKS.lock() {
        m.push((name, now));
    }
}

/// Prints the phases to stderr (when enabled).
pub fn report(command: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    mark("exit");
    let Ok(m) = MARKS.lock() else {
        return;
    };
    let Some(&(_, first)) = m.first() else {
        return;
    };
    let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1000.0;
    let mut line = format!("calico-cni timing: cmd={command}");
    if let Some(&(_, last)) = m.last() {
        line.push_str(&format!(" total={:.2}ms", ms(first, last)));
    }
    for pair in m.windows(2) {
        line.push_str(&format!(" {}={:.2}", pair[1].0, ms(pair[0].1, pair[1].1)));
    }
    eprintln!("{line}");
}
