//! The sans-IO core of porthawk.
//!
//! This crate owns everything that can be decided without touching the operating system:
//! the target model ([`TargetSpace`], [`HostSet`], [`PortSet`]), the seeded permutation of
//! the target space and its split into shards ([`Permutation`], [`ShardSlice`]), the probe
//! state machine that the engine's backends drive ([`Probe`]), the result records and the
//! postcard batch frames ([`ResultBatch`], [`encode_frame`], [`decode_frame`]), and the one
//! result line every output prints ([`ResultLine`]).
//!
//! Architecture invariant: nothing here opens a socket, reads the clock, spawns a thread,
//! or panics on bytes that came from a peer.

#![forbid(unsafe_code)]

mod civil;
mod dialog;
mod diff;
mod duration;
mod errno;
mod escape;
mod family;
mod fleet;
#[doc(hidden)]
pub mod fuzzing;
mod identify;
mod line;
mod options;
mod permute;
mod ports;
mod presets;
mod probe;
mod record;
mod remedy;
mod space;
mod target;
mod tls;
mod xml;

pub use civil::rfc3339;
pub use dialog::{
    Conversation, Dialog, DialogError, DialogStep, Pattern, SendPiece, BANNER_LIMIT, CAPTURE_LIMIT,
    DEFAULT_MAX_PROBES, MAX_CAPTURES, MAX_REPLY_LIMIT, READ_LIMIT,
};
pub use diff::{diff_results, ChangeKind, FieldChange, LineChange};
pub use duration::parse_duration;
pub use errno::{errno_name, is_local_errno, Errno};
pub use escape::{parse_escapes, printable, EscapeError};
pub use family::{AddressMode, FamilyChoice, IpFamily};
pub use fleet::{
    frame_msg_id, inbox_prefix, parse_results_subject, parse_u32_header, parse_work_subject,
    pool_consumer, results_agent_filter, results_subject, slice_count, slice_len, slice_range,
    spec_key, work_filter, work_job_filter, work_msg_id, work_subject, AgentStatus, Attempt,
    EndReason, FleetJob, FleetName, LastFrame, RunningSlice, SpecRef, SweepProbe, SweepSpec,
    WireError, WireMessage, WorkItem, AGENTS_BUCKET, COORDINATOR_CONSUMER, FLEET_HEADER_LEN,
    FLEET_VERSION, HEADER_ATTEMPT, HEADER_END, HEADER_FRAME, HEADER_LAST, HEADER_SLICE,
    HEADER_SWEEP, MAX_DELIVERIES_ADVISORY, MAX_END_REASON_LEN, MAX_NAME_LEN, MAX_SLICE_LEN,
    MAX_SPEC_LEN, MAX_STATUS_LEN, MAX_WORK_LEN, MIN_SLICE_LEN, RESULTS_STREAM, RESULTS_SUBJECTS,
    SPECS_BUCKET, WIRE_TOKEN, WORK_STREAM, WORK_SUBJECTS,
};
pub use identify::{
    identify, nth_probe, probe_order, Identity, ProbePlan, ReplyVerdict, ServiceProbe,
    IDENTIFY_SCAN_LIMIT, IDENTITY_FIELD_LIMIT, SERVICE_PROBES,
};
pub use line::{banner_text, trim_line_end, ResultLine};
pub use options::{ProbeOptions, ProbeOptionsError, ProbeStep};
pub use permute::Permutation;
pub use ports::{PortSet, PortsError, DEFAULT_PORTS, MAX_PORT_ELEMENTS};
pub use presets::{
    ldap_reply, preset, presets, xml_tags, xmpp_stream_header, LdapReply, Preset, PresetStep,
    TlsMode, UnknownPreset, Wire, WireVerdict, XmlTag, IDENTIFY_PROBE, LDAP_STARTTLS_REQUEST,
};
pub use probe::{ConnectEvent, Probe, ProbeSpec, Step};
pub use record::{
    decode_frame, encode_frame, FrameError, JobId, PortState, ProbeRecord, ResultBatch,
    FRAME_HEADER_LEN, FRAME_MAGIC, FRAME_VERSION, MAX_FRAME_LEN,
};
pub use remedy::{
    action_result_subject, action_subject, cap_text, is_action_name, IncidentContext, RanStatus,
    RemedyOutcome, RemedyRequest, RemedyResult, MAX_REMEDY_ITEMS, MAX_REMEDY_OUTPUT,
    MAX_REMEDY_REQUEST_LEN, MAX_REMEDY_RESULT_LEN, MAX_REMEDY_TEXT,
};
pub use space::{ShardSlice, SpaceError, TargetSpace, MAX_PROBES};
pub use target::{
    parse_target, parse_target_list, AddrRange, HostSet, HostSetBuilder, TargetError, TargetToken,
    MAX_TARGETS,
};
pub use tls::{
    alert_by_name, alert_name, client_auth_from_pem, client_config as tls_client_config,
    client_config_with as tls_client_config_with, parse_certificate, roots_from_pem, system_roots,
    CertError, CertInfo, ClientAuth, TlsCheck, TlsInfo, TlsVerifier,
};
pub use xml::{escape as xml_escape, nmap_xml, port_ranges, XmlRun, NMAP_XML_OUTPUT_VERSION};
