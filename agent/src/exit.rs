//! palisade's exit statuses, one list for every command (they follow
//! runc and the shell's conventions, so scripts can tell them apart):
//! - 0: done; a foreground container's own status passes through;
//! - [`BAD_INPUT`] (2): the request was refused before anything changed: a
//!   bad flag, policy file, container name, unknown container, or a
//!   corrupt or unauthenticated image;
//! - [`SETUP_FAILED`] (125): palisade could not do what was asked (the
//!   kernel refused a step); what it had made was undone;
//! - [`UNSUPPORTED`] (1): `palisade check` found this host lacking
//!   something `run` needs (as `criu check` exits 1);
//! - [`NOT_EXECUTABLE`] (126) and [`NOT_FOUND`] (127): the container's
//!   command could not be executed, or was not found.

pub const UNSUPPORTED: i32 = 1;
pub const BAD_INPUT: i32 = 2;
pub const SETUP_FAILED: i32 = 125;
pub const NOT_EXECUTABLE: i32 = 126;
pub const NOT_FOUND: i32 = 127;
