//! Measures the cost of one local sample: wall time and the sampling
//! thread's CPU time, over N samples one tick apart.
//!
//! `cargo run --release --example sampler_cost -- [samples] [interval_ms]`

use std::time::{Duration, Instant};

use opswire::sampler::Sampler;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let interval = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(200));
    let mut sampler = Sampler::new(Sampler::os_host_name(), None).expect("sampler");
    let mut wall = Vec::with_capacity(n);
    let mut cpu = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        std::thread::sleep(interval);
        let (w0, c0) = (Instant::now(), thread_cpu());
        let snap = sampler.sample();
        wall.push(w0.elapsed());
        cpu.push(thread_cpu() - c0);
        bytes = serde_json::to_vec(&snap).unwrap().len();
    }
    wall.sort();
    cpu.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "samples={n} wall: mean={:?} p50={:?} max={:?}  cpu: mean={:?} p50={:?} max={:?}  snapshot={bytes} bytes",
        mean(&wall),
        wall[n / 2],
        wall[n - 1],
        mean(&cpu),
        cpu[n / 2],
        cpu[n - 1]
    );
    println!(
        "at a 1 s tick the sampler uses {:.3} % of one core",
        mean(&cpu).as_secs_f64() * 100.0
    );
}
