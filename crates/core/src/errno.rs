//! Linux errno values that matter to a port scanner, and their names.
//!
//! The values are the generic Linux ones (identical on x86_64 and aarch64); the core does not
//! depend on libc so that it stays free of the operating system.

/// An errno value as the kernel reports it (positive).
pub type Errno = i32;

/// Errno values the probe machine classifies.
pub(crate) mod consts {
    pub const EINTR: i32 = 4;
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EAGAIN: i32 = 11;
    pub const ENOBUFS: i32 = 105;
    pub const ENETDOWN: i32 = 100;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EADDRNOTAVAIL: i32 = 99;
}

const NAMES: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (4, "EINTR"),
    (5, "EIO"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (32, "EPIPE"),
    (71, "EPROTO"),
    (88, "ENOTSOCK"),
    (92, "ENOPROTOOPT"),
    (93, "EPROTONOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (97, "EAFNOSUPPORT"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (102, "ENETRESET"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (106, "EISCONN"),
    (107, "ENOTCONN"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
    (114, "EALREADY"),
    (115, "EINPROGRESS"),
    (125, "ECANCELED"),
];

/// Whether `errno` is a shortage on this machine rather than an answer from the target:
/// out of descriptors (`EMFILE`, `ENFILE`), buffers (`ENOBUFS`), memory (`ENOMEM`) or local
/// ports (`EADDRNOTAVAIL`). A record with such an errno says nothing about the target: the
/// engine retries these probes, and a monitor or the CLI that still sees one treats it as
/// "unknown, our problem", never as the target being down.
pub fn is_local_errno(errno: Errno) -> bool {
    matches!(
        errno,
        consts::EMFILE | consts::ENFILE | consts::ENOBUFS | consts::ENOMEM | consts::EADDRNOTAVAIL
    )
}

/// The symbolic name of a Linux errno value (`"ECONNREFUSED"`), or `"E?"` for one the table
/// does not know.
pub fn errno_name(errno: Errno) -> &'static str {
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, name)| *name)
        .unwrap_or("E?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown() {
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(113), "EHOSTUNREACH");
        assert_eq!(errno_name(9999), "E?");
    }

    #[test]
    fn local_shortages_are_told_apart_from_answers() {
        for (name, local) in [
            ("EMFILE", true),
            ("ENFILE", true),
            ("ENOBUFS", true),
            ("ENOMEM", true),
            ("EADDRNOTAVAIL", true),
            ("ECONNREFUSED", false),
            ("EHOSTUNREACH", false),
            ("ETIMEDOUT", false),
            ("EIO", false),
        ] {
            let errno = NAMES.iter().find(|(_, n)| *n == name).unwrap().0;
            assert_eq!(is_local_errno(errno), local, "{name}");
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
