//! Media threads and tasks that cannot die silently.
//!
//! Every media stage runs on its own thread or task (capture and encode, per-peer send legs,
//! receive and decode, playout). A bug that panics in one of them must not take the process
//! down, and must not leave a pipeline that looks alive while nothing flows: the stage's panic
//! is caught here, logged as an error with the stage's name, and handed back so the pipeline
//! can record it where the engine and the UI look (its stats' `failed`).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use tracing::error;

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs a thread's body; `Err` with a description if it panicked (already logged).
pub fn guard_thread(stage: &'static str, body: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(body)).map_err(|p| died(stage, p.as_ref()))
}

/// Runs a task's future; `Err` with a description if it panicked (already logged).
pub async fn guard_task(stage: &'static str, body: impl Future<Output = ()>) -> Result<(), String> {
    futures_util::FutureExt::catch_unwind(AssertUnwindSafe(body))
        .await
        .map_err(|p| died(stage, p.as_ref()))
}

fn died(stage: &'static str, panic: &(dyn Any + Send)) -> String {
    let why = panic_message(panic);
    error!(stage, reason = %why, "media stage failed");
    format!("{stage}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_thread_is_reported_with_its_stage_and_reason() {
        let r = std::thread::spawn(|| guard_thread("encode", || panic!("bad frame size")))
            .join()
            .expect("the thread itself ends normally");
        assert_eq!(r, Err("encode: bad frame size".to_string()));
        let r = guard_thread("encode", || {});
        assert_eq!(r, Ok(()));
        let owned = guard_thread("decode", || panic!("{}", String::from("owned text")));
        assert_eq!(owned, Err("decode: owned text".to_string()));
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_too() {
        let r = guard_task("receive", async { panic!("sequence overflow") }).await;
        assert_eq!(r, Err("receive: sequence overflow".to_string()));
        assert_eq!(guard_task("receive", async {}).await, Ok(()));
    }
}
