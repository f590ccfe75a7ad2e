//! Kiln's cron schedules.
//!
//! A schedule ([`ScheduleSpec`]) has a name, a cron expression (seconds field allowed) read
//! in an IANA time zone, a job template ([`kiln_queue::JobSpec`]), an on/off switch and an
//! opt-in catch-up run. The [`store`] creates, reads, lists, changes and deletes them; the
//! [`Scheduler`] fires them. Any number of schedulers may run: one leads (a Postgres advisory
//! lock on a dedicated connection), and each tick enqueues exactly one job, because the tick
//! advances the schedule's cursor with a compare-and-set in the same transaction that
//! enqueues its job (idempotency key `schedule:NAME:TICK`). Ticks that fell while no
//! scheduler was running are not replayed, unless the schedule asks for one catch-up run.

pub mod error;
mod fire;
pub mod presence;
mod runner;
pub mod spec;
pub mod store;

pub use error::{Result, SchedulerError};
pub use runner::{Scheduler, SchedulerConfig, LOCK_NAME};
pub use spec::{SchedulePatch, ScheduleSpec, Ticks, ValidSchedule};
pub use store::Schedule;
