//! Container specs and policy: parse, validate, normalise.
//!
//! Owns the policy file grammar and its compilation into the rule tables
//! the kernel programs read. Everything here is pure: a bad file is
//! rejected before anything on the host is touched, and nothing here ever
//! touches the host.

mod agent_config;
mod devices;
mod egress;
mod launch;
mod limits;
mod oci;
mod oom;
mod policy;
mod policy_file;
mod resources;
mod rules;
mod sockets;
mod view;

pub use agent_config::{
    AgentConfig, ClassifyRule, ClassifyTables, ExeGlob, FD_EXEC_PREFIX, MAX_CLASSIFY_RULES,
    compile_classify,
};
pub use devices::{
    DEFAULT_DEVICES, DevicePolicy, DeviceRule, DeviceRuleError, DeviceType, access_letters,
    compile_devices, parse_access,
};
pub use egress::{DisplayRate, Egress, default_burst, parse_bit_rate};
pub use launch::{
    BindMount, DeviceRequest, Launch, MountRestrictions, NetMode, RECIPE_VERSION, Recipe,
    mount_destination,
};
pub use limits::Limits;
pub use oci::{
    Bundle, ExecProcess, HookCommand, HookSet, OciError, POLICY_ANNOTATION, POLICY_FILE_ANNOTATION,
    Rlimit, features_annotations, load_bundle, load_process, load_resources,
    policy_from_annotations,
};
pub use oom::{OomAction, OomCondition, OomPolicy};
pub use policy::{NetworkPolicy, Policy, PolicyError, SecurityPolicy};
pub use policy_file::{MAX_POLICY_BYTES, read_policy_file};
pub use resources::{
    CPU_PERIOD_US, CpuQuota, Device, DeviceRate, RT_PERIOD_US, RT_PERIODS_US, ResourceError,
    ResourceLimits, Resources, RtBandwidth, Swap, Value, parse_device_rate, parse_id_list,
    parse_rate, parse_size,
};
pub use rules::{
    Action, CompiledRules, Family, PrefixEntry, Proto, Rule, RuleError, Target, compile,
    prefix_count,
};
pub use sockets::SocketKinds;
pub use view::{ViewFile, ViewPolicy};
