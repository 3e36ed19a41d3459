//! The surroundings of a build: what its container is like that the artifact may not depend
//! on — the host name, the umask of the phases' commands, the time zone.
//!
//! Every build gets the same fixed [`Surroundings::default`] (so a build that reads one of
//! these gets the same bytes each time, whatever machine or engine runs it); `packager verify`
//! gives its second build [`Surroundings::varied`] ones, in the manner of reprotest, to catch
//! an artifact that depends on them. `{jobs}`, the other thing verify varies, is a recipe
//! template variable: the pipeline loads the recipe with another count (see
//! [`crate::reproduce::Variations`]).

use serde::Serialize;

use crate::docker::ContainerSpec;

/// The host name of every build container.
pub const HOSTNAME: &str = "packager-build";
/// The host name of a varied build.
pub const VARIED_HOSTNAME: &str = "varied-host";
/// The umask of every phase's commands.
pub const UMASK: u32 = 0o022;
/// The umask of a varied build's commands (reprotest's).
pub const VARIED_UMASK: u32 = 0o002;
/// The time zone (`TZ`) of every build.
pub const TZ: &str = "UTC";
/// The time zone of a varied build: 14 hours ahead of UTC, the farthest there is, so local
/// times are on another day half the time. A POSIX zone, which needs no tzdata in the image.
pub const VARIED_TZ: &str = "<+14>-14";

/// What a build's container is like beyond the recipe, the stack and the sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Surroundings {
    /// The container's host name.
    pub hostname: String,
    /// The umask every phase command runs under.
    pub umask: u32,
    /// `TZ` in the container.
    pub tz: String,
}

impl Default for Surroundings {
    /// The surroundings of every build: [`HOSTNAME`], [`UMASK`], [`TZ`].
    fn default() -> Self {
        Surroundings {
            hostname: HOSTNAME.to_string(),
            umask: UMASK,
            tz: TZ.to_string(),
        }
    }
}

impl Surroundings {
    /// [`VARIED_HOSTNAME`], [`VARIED_UMASK`], [`VARIED_TZ`]: each differs from the default.
    pub fn varied() -> Self {
        Surroundings {
            hostname: VARIED_HOSTNAME.to_string(),
            umask: VARIED_UMASK,
            tz: VARIED_TZ.to_string(),
        }
    }

    /// Sets the host name and `TZ` of a build container. A `TZ` already in its environment
    /// (the recipe's `[build.env]`) is kept: what the recipe sets, the artifact may depend on.
    pub fn apply(&self, spec: &mut ContainerSpec) {
        spec.hostname = Some(self.hostname.clone());
        if !spec.env.iter().any(|(k, _)| k == "TZ") {
            spec.env.push(("TZ".to_string(), self.tz.clone()));
        }
    }

    /// A phase's `command` as the shell runs it: under the umask.
    pub fn script(&self, command: &str) -> String {
        format!("umask {:04o}\n{command}", self.umask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_varied_surroundings_differ_in_everything() {
        let (a, b) = (Surroundings::default(), Surroundings::varied());
        assert_ne!(a.hostname, b.hostname);
        assert_ne!(a.umask, b.umask);
        assert_ne!(a.tz, b.tz);
    }

    #[test]
    fn applied_to_a_container() {
        let mut spec = ContainerSpec::new("img");
        Surroundings::varied().apply(&mut spec);
        assert_eq!(spec.hostname.as_deref(), Some(VARIED_HOSTNAME));
        assert_eq!(spec.env, [("TZ".to_string(), VARIED_TZ.to_string())]);
        // The recipe's own TZ stays.
        let mut spec = ContainerSpec::new("img");
        spec.env.push(("TZ".into(), "Europe/Paris".into()));
        Surroundings::varied().apply(&mut spec);
        assert_eq!(spec.env, [("TZ".to_string(), "Europe/Paris".to_string())]);
        assert_eq!(Surroundings::default().script("make"), "umask 0022\nmake");
    }
}
