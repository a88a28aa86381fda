//! The container runtime, end to end: lifecycle, isolation, hardening, limits.

mod support;
