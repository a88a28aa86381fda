//! Userspace OOM handling: the `[oom]` section of a container's policy.
//! (To be written: watches the container's memory events and acts.)

use super::Ctx;
use crate::runtime::State;

/// Starts watching `state`'s container if its policy has an `[oom]`
/// section; `None` if it has none. The task ends when the container does,
/// or is aborted by the agent when the container is removed or its policy
/// changes.
pub fn watch(_ctx: &Ctx, _state: &State) -> Option<tokio::task::JoinHandle<()>> {
    None
}
