//! jobcast's backend abstraction: the job types every backend shares, the [`JobQueue`] and
//! [`Bus`] traits the gateway and the workers talk to, and a [`conformance`] suite that every
//! backend must pass; and [`ByLabels`], the handle cache the gateway's and the workers'
//! per-job metrics share.
#![warn(missing_docs)]

mod cancel;
pub mod conformance;
mod error;
mod labelled;
mod traits;
mod types;

pub use cancel::JobCancel;
pub use error::{Error, Result};
pub use labelled::ByLabels;
pub use traits::{Bus, JobQueue};
pub use types::*;

pub use jobcast_protocol as protocol;
