//! Rule-based classification of host processes into containers.
//! (To be written: a sched_process_exec tracepoint feeds exec events; the
//! agent moves matching processes into the named container's cgroups.)
