//! The one error of everything that happens before a mount serves: bad settings, a
//! volume that cannot be made, a layer that cannot be opened, a mount the kernel
//! refuses. A [`SetupError`] has a [`SetupErrorKind`] a caller can act on (the
//! storage driver maps it to its runtime's codes) and a message that is one line
//! naming the path and the problem.

use std::fmt;
use std::io;
use std::path::Path;

/// What kind of failure, as a caller decides what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupErrorKind {
    /// A path, volume or mount that should exist does not.
    NotFound,
    /// Something to be made is already there (a volume, a mount at that point).
    AlreadyExists,
    /// In use: a work dir held by another mount, a volume a mount uses, a busy unmount.
    Busy,
    /// Bad input: a malformed option, a file where a directory belongs, layers nested.
    Invalid,
    /// The caller may not do this (permissions, missing capability).
    PermissionDenied,
    /// Any other failure of the system.
    Io,
}

/// A failure to set up (or tear down) a mount, said in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupError {
    kind: SetupErrorKind,
    message: String,
}

impl SetupError {
    pub fn new(kind: SetupErrorKind, message: impl Into<String>) -> SetupError {
        let mut message: String = message.into();
        // One line, whatever the source said (a helper's stderr may hold several).
        if message.contains('\n') {
            message = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
        }
        // Nothing unprintable either: a hostile name in the message must not move the cursor
        // or colour the terminal it is shown on.
        if message.chars().any(char::is_control) {
            let mut escaped = String::with_capacity(message.len());
            for c in message.chars() {
                if c.is_control() {
                    escaped.extend(c.escape_default());
                } else {
                    escaped.push(c);
                }
            }
            message = escaped;
        }
        SetupError { kind, message }
    }

    pub fn invalid(message: impl Into<String>) -> SetupError {
        SetupError::new(SetupErrorKind::Invalid, message)
    }

    /// `PATH: what: the system's words`, its kind taken from the error.
    pub fn io(path: &Path, what: &str, err: &io::Error) -> SetupError {
        let message = if what.is_empty() {
            format!("{}: {err}", path.display())
        } else {
            format!("{}: {what}: {err}", path.display())
        };
        SetupError::new(kind_of(err), message)
    }

    /// The same, from a raw errno.
    pub fn errno(path: &Path, what: &str, errno: i32) -> SetupError {
        SetupError::io(path, what, &io::Error::from_raw_os_error(errno))
    }

    pub fn kind(&self) -> SetupErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SetupError {}

/// The kind a caller acts on, from what the system said.
pub fn kind_of(err: &io::Error) -> SetupErrorKind {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound => SetupErrorKind::NotFound,
        K::AlreadyExists => SetupErrorKind::AlreadyExists,
        K::ResourceBusy | K::WouldBlock => SetupErrorKind::Busy,
        K::PermissionDenied => SetupErrorKind::PermissionDenied,
        K::InvalidInput | K::NotADirectory | K::IsADirectory | K::InvalidFilename => {
            SetupErrorKind::Invalid
        }
        _ => SetupErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_the_kinds_callers_act_on() {
        let p = Path::new("/x");
        for (errno, kind) in [
            (libc::ENOENT, SetupErrorKind::NotFound),
            (libc::EEXIST, SetupErrorKind::AlreadyExists),
            (libc::EBUSY, SetupErrorKind::Busy),
            (libc::EAGAIN, SetupErrorKind::Busy),
            (libc::EACCES, SetupErrorKind::PermissionDenied),
            (libc::EPERM, SetupErrorKind::PermissionDenied),
            (libc::ENOTDIR, SetupErrorKind::Invalid),
            (libc::EIO, SetupErrorKind::Io),
        ] {
            assert_eq!(SetupError::errno(p, "open", errno).kind(), kind, "{errno}");
        }
    }

    #[test]
    fn messages_are_one_line() {
        let e = SetupError::invalid("fusermount3: bad\n\noption\n");
        assert_eq!(e.to_string(), "fusermount3: bad; option");
        let e = SetupError::invalid("data:r\tx\u{1b}[31m: bad");
        assert_eq!(e.to_string(), "data:r\\tx\\u{1b}[31m: bad");
    }
}
