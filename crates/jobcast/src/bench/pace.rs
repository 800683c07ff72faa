//! The open loops' clock: one OS thread that sleeps until each scheduled send and hands it
//! over, for `bench rpc --rate` and `bench fanout`'s publisher.
//!
//! Tokio's timers fire on a 1 ms wheel, and in a client busy with thousands of connections
//! later still, so a send scheduled with them goes out late, and that lateness (the client's,
//! not the server's) would be counted in every latency measured from the scheduled time;
//! `thread::sleep` wakes within tens of microseconds, unless the machine keeps the thread from
//! running. How late each send of the measured window was handed over is returned, so a report
//! can show the client's own part of a tail.

use super::report;
use hdrhistogram::Histogram;
use std::{thread::JoinHandle, time::Duration};
use tokio::{sync::mpsc::UnboundedSender, time::Instant};

/// One scheduled send: its number from 0, and when it is due.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub n: u64,
    pub at: Instant,
}

/// When the sends are due: `count` of them, `rate` per second from `start`.
#[derive(Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub rate: f64,
    pub count: u64,
}

impl Schedule {
    /// Sends at `rate` per second from `start` until (not including) `stop`.
    pub fn until(start: Instant, stop: Instant, rate: f64) -> Self {
        let count = ((stop - start).as_secs_f64() * rate).ceil() as u64;
        Self { start, rate, count }
    }

    /// When send `n` is due (computed from `start`, so no error adds up over a long run).
    pub fn at(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

/// Starts the clock: each tick goes to `to[n % to.len()]` when due; one that ended has dropped
/// its receiver and the others go on. The thread ends after the last tick and returns how late
/// it handed over each one due at or after `measure_from`.
pub fn start(
    schedule: Schedule,
    measure_from: Instant,
    to: Vec<UnboundedSender<Tick>>,
) -> JoinHandle<Histogram<u64>> {
    std::thread::spawn(move || {
        let mut late = report::histogram();
        if to.is_empty() {
            return late;
        }
        for n in 0..schedule.count {
            let at = schedule.at(n);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if at >= measure_from {
                let _ = late.record(report::micros(at.elapsed()));
            }
            let _ = to[(n % to.len() as u64) as usize].send(Tick { n, at });
        }
        late
    })
}

/// Waits for the clock's thread and takes what it measured.
pub async fn finish(clock: JoinHandle<Histogram<u64>>) -> anyhow::Result<Histogram<u64>> {
    tokio::task::spawn_blocking(move || clock.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the open loop's clock panicked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_has_every_send_before_its_stop() {
        let start = Instant::now();
        let s = Schedule::until(start, start + Duration::from_secs(11), 500.0);
        assert_eq!(s.count, 5500);
        assert_eq!(s.at(0), start);
        assert_eq!(s.at(500), start + Duration::from_secs(1));
        // A fraction of a period left before the stop still holds one more send.
        let s = Schedule::until(start, start + Duration::from_millis(1001), 2.0);
        assert_eq!(s.count, 3);
    }

    #[tokio::test]
    async fn ticks_come_in_order_round_the_receivers() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate: 1000.0,
            count: 10,
        };
        let (a, mut ra) = tokio::sync::mpsc::unbounded_channel();
        let (b, mut rb) = tokio::sync::mpsc::unbounded_channel();
        let late = finish(super::start(schedule, start, vec![a, b]))
            .await
            .unwrap();
        assert_eq!(late.len(), 10);
        let mut got = (Vec::new(), Vec::new());
        while let Ok(t) = ra.try_recv() {
            assert_eq!(t.at, schedule.at(t.n));
            got.0.push(t.n);
        }
        while let Ok(t) = rb.try_recv() {
            assert_eq!(t.at, schedule.at(t.n));
            got.1.push(t.n);
        }
        assert_eq!(got, (vec![0, 2, 4, 6, 8], vec![1, 3, 5, 7, 9]));
    }
}
