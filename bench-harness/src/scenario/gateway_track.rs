//! The gateway's /proc samples over a run (`rpc`, `observers`): CPU and RSS once a
//! second for the live progress and the report's `samples`, and the CPU time and RSS at
//! the start and the end of the measured window for its totals.
//!
//! Why it exists: the gateway's cost per request (or push) is half of what a run
//! reports; each scenario's coordinator samples it (spawned for the run or given by
//! `--gateway-pid`) through this one file.

use std::time::Instant;

use crate::procstat::{self, Sample};
use crate::report::{fmt_bytes, GatewaySample, GatewayUsage};

/// The gateway's /proc samples over the run.
pub(crate) struct GatewayTrack {
    pid: Option<u32>,
    spawned: bool,
    samples: Vec<GatewaySample>,
    last: Option<Sample>,
    begin: Option<Sample>,
    end: Option<Sample>,
    peak: u64,
}

impl GatewayTrack {
    pub(crate) fn new(pid: Option<u32>, spawned: bool) -> GatewayTrack {
        GatewayTrack {
            pid,
            spawned,
            samples: Vec::new(),
            last: None,
            begin: None,
            end: None,
            peak: 0,
        }
    }

    fn read(&mut self) -> Option<Sample> {
        let s = procstat::sample(self.pid?).ok()?;
        self.peak = self.peak.max(s.rss_bytes);
        Some(s)
    }

    pub(crate) fn sample(&mut self, start: Instant, now: Instant) {
        let Some(s) = self.read() else { return };
        let t = if now >= start {
            now.duration_since(start).as_secs_f64()
        } else {
            -start.duration_since(now).as_secs_f64()
        };
        let cpu = self.last.map_or(0.0, |l| {
            100.0 * s.cpu_secs_since(&l) / s.at.duration_since(l.at).as_secs_f64().max(1e-9)
        });
        self.samples.push(GatewaySample {
            t_secs: t,
            rss_bytes: s.rss_bytes,
            cpu_percent_of_core: cpu,
        });
        self.last = Some(s);
    }

    pub(crate) fn mark_begin(&mut self) {
        self.begin = self.read();
    }

    pub(crate) fn mark_end(&mut self) {
        self.end = self.read();
    }

    pub(crate) fn last_line(&self) -> String {
        match self.samples.last() {
            Some(s) if self.pid.is_some() => format!(
                "  gw cpu {:.0}% rss {}",
                s.cpu_percent_of_core,
                fmt_bytes(s.rss_bytes as f64)
            ),
            _ => String::new(),
        }
    }

    pub(crate) fn usage(&mut self, duration_secs: f64) -> Option<GatewayUsage> {
        let pid = self.pid?;
        let (b, e) = (self.begin, self.end);
        let cpu_secs = b.zip(e).map(|(b, e)| e.cpu_secs_since(&b));
        let window = b
            .zip(e)
            .map(|(b, e)| e.at.duration_since(b.at).as_secs_f64())
            .unwrap_or(duration_secs)
            .max(1e-9);
        Some(GatewayUsage {
            pid,
            spawned: self.spawned,
            cpu_secs,
            cpu_percent_of_core: cpu_secs.map(|c| 100.0 * c / window),
            rss_start_bytes: b.map(|s| s.rss_bytes),
            rss_end_bytes: e.map(|s| s.rss_bytes),
            rss_peak_bytes: (self.peak > 0).then_some(self.peak),
            hwm_bytes: e.or(b).map(|s| s.hwm_bytes),
            samples: std::mem::take(&mut self.samples),
        })
    }
}
