//! Platforms, from a decision request's `os` or SE's free-text `operating_system`.

use serde::{Deserialize, Serialize};

/// The platforms a decision request may name. Duo's SE check applies to Windows and macOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Windows, desktop or server.
    Windows,
    /// macOS (and Mac OS X).
    Macos,
    /// Any Linux distribution.
    Linux,
    /// iOS and iPadOS.
    Ios,
    /// Android.
    Android,
    /// ChromeOS.
    Chromeos,
    /// Anything else.
    Other,
}

impl Platform {
    /// Parses a request's `os` case-insensitively; `None` for a value outside the contract.
    pub(crate) fn from_request(os: &str) -> Option<Platform> {
        Some(match os.trim().to_ascii_lowercase().as_str() {
            "windows" => Platform::Windows,
            "macos" => Platform::Macos,
            "linux" => Platform::Linux,
            "ios" => Platform::Ios,
            "android" => Platform::Android,
            "chromeos" => Platform::Chromeos,
            "other" => Platform::Other,
            _ => return None,
        })
    }

    /// Classifies SE's `operating_system` ("Windows 10", "Windows Server 2019", "macOS 13.2",
    /// "Mac OS X 10.15", "iOS 16.0 (iPhone11,6)", "Ubuntu 20.04", "Android 12", …).
    pub fn from_se_operating_system(os: &str) -> Option<Platform> {
        let os = os.trim().to_ascii_lowercase();
        if os.is_empty() {
            return None;
        }
        let has = |needle: &str| os.contains(needle);
        Some(if has("windows") {
            Platform::Windows
        } else if has("macos") || has("mac os") || has("os x") || has("darwin") {
            Platform::Macos
        } else if os.starts_with("ios") || has("ipados") || has("iphone") || has("ipad") {
            Platform::Ios
        } else if has("android") {
            Platform::Android
        } else if has("chrome") {
            Platform::Chromeos
        } else if [
            "linux", "ubuntu", "debian", "red hat", "rhel", "centos", "fedora", "suse", "amazon",
            "oracle", "rocky", "alma",
        ]
        .iter()
        .any(|d| has(d))
        {
            Platform::Linux
        } else {
            Platform::Other
        })
    }

    /// Whether Duo's "block compromised endpoints" check covers this platform.
    pub(crate) fn se_checked(self) -> bool {
        matches!(self, Platform::Windows | Platform::Macos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("Windows 10", Platform::Windows)]
    #[case("Windows 10, SP 0.0", Platform::Windows)]
    #[case("Windows Server 2019", Platform::Windows)]
    #[case("macOS 13.2", Platform::Macos)]
    #[case("Mac OS X 10.15.7", Platform::Macos)]
    #[case("iOS 16.0 (iPhone11,6)", Platform::Ios)]
    #[case("Ubuntu 20.04", Platform::Linux)]
    #[case("Android 12", Platform::Android)]
    #[case("Solaris 11", Platform::Other)]
    fn se_operating_systems_classify(#[case] os: &str, #[case] expected: Platform) {
        assert_eq!(Platform::from_se_operating_system(os), Some(expected));
    }

    #[test]
    fn request_os_is_case_insensitive_and_closed() {
        assert_eq!(Platform::from_request("MacOS"), Some(Platform::Macos));
        assert_eq!(Platform::from_request("beos"), None);
    }
}
