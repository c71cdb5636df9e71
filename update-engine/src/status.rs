//! The engine's states (whose strings are the D-Bus API), the status tuple
//! reported by `GetStatus`/`StatusUpdate`, and the Omaha event and error codes.

use std::fmt;

/// The update engine's state; [`UpdateStatus::as_str`] is the wire string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateStatus {
    Idle,
    CheckingForUpdate,
    UpdateAvailable,
    Downloading,
    Verifying,
    Finalizing,
    UpdatedNeedReboot,
    ReportingErrorEvent,
}

impl UpdateStatus {
    /// Every state, in pipeline order.
    pub const ALL: [UpdateStatus; 8] = [
        UpdateStatus::Idle,
        UpdateStatus::CheckingForUpdate,
        UpdateStatus::UpdateAvailable,
        UpdateStatus::Downloading,
        UpdateStatus::Verifying,
        UpdateStatus::Finalizing,
        UpdateStatus::UpdatedNeedReboot,
        UpdateStatus::ReportingErrorEvent,
    ];

    /// The original's state string.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::Idle => "UPDATE_STATUS_IDLE",
            UpdateStatus::CheckingForUpdate => "UPDATE_STATUS_CHECKING_FOR_UPDATE",
            UpdateStatus::UpdateAvailable => "UPDATE_STATUS_UPDATE_AVAILABLE",
            UpdateStatus::Downloading => "UPDATE_STATUS_DOWNLOADING",
            UpdateStatus::Verifying => "UPDATE_STATUS_VERIFYING",
            UpdateStatus::Finalizing => "UPDATE_STATUS_FINALIZING",
            UpdateStatus::UpdatedNeedReboot => "UPDATE_STATUS_UPDATED_NEED_REBOOT",
            UpdateStatus::ReportingErrorEvent => "UPDATE_STATUS_REPORTING_ERROR_EVENT",
        }
    }

    /// Parses a state string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `(x d s s x)` status tuple.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusInfo {
    /// Unix time of the last update check (0 before the first).
    pub last_checked_time: i64,
    /// Progress of the current operation, 0.0 to 1.0.
    pub progress: f64,
    pub current_operation: UpdateStatus,
    pub new_version: String,
    pub new_size: i64,
}

impl Default for StatusInfo {
    fn default() -> Self {
        StatusInfo {
            last_checked_time: 0,
            progress: 0.0,
            current_operation: UpdateStatus::Idle,
            new_version: String::new(),
            new_size: 0,
        }
    }
}

/// Omaha event types sent by the engine.
pub mod event_type {
    pub const DOWNLOAD_COMPLETE: u32 = 1;
    pub const INSTALL_COMPLETE: u32 = 2;
    pub const UPDATE_COMPLETE: u32 = 3;
    pub const UPDATE_DOWNLOAD_STARTED: u32 = 13;
    pub const UPDATE_DOWNLOAD_FINISHED: u32 = 14;
}

/// Omaha event results.
pub mod event_result {
    pub const ERROR: u32 = 0;
    pub const SUCCESS: u32 = 1;
    pub const SUCCESS_REBOOT: u32 = 2;
    pub const UPDATE_DEFERRED: u32 = 9;
}

/// The original's ActionExitCode values, reported as Omaha `errorcode`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Success,
    Error,
    OmahaRequestError,
    OmahaResponseHandlerError,
    FilesystemCopierError,
    PostinstallRunnerError,
    InstallDeviceOpenError,
    DownloadTransferError,
    PayloadHashMismatchError,
    PayloadSizeMismatchError,
    DownloadPayloadVerificationError,
    DownloadWriteError,
    NewRootfsVerificationError,
    DownloadPayloadPubKeyVerificationError,
    DownloadInvalidMetadataMagicString,
    DownloadManifestParseError,
    DownloadOperationHashMismatch,
    DownloadOperationExecutionError,
    OmahaResponseInvalid,
    OmahaRequestHttpError,
    DownloadIncomplete,
    /// 2000 + the HTTP status of a failed request.
    OmahaRequestHttpResponse(u16),
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Success => 0,
            ErrorCode::Error => 1,
            ErrorCode::OmahaRequestError => 2,
            ErrorCode::OmahaResponseHandlerError => 3,
            ErrorCode::FilesystemCopierError => 4,
            ErrorCode::PostinstallRunnerError => 5,
            ErrorCode::InstallDeviceOpenError => 7,
            ErrorCode::DownloadTransferError => 9,
            ErrorCode::PayloadHashMismatchError => 10,
            ErrorCode::PayloadSizeMismatchError => 11,
            ErrorCode::DownloadPayloadVerificationError => 12,
            ErrorCode::DownloadWriteError => 14,
            ErrorCode::NewRootfsVerificationError => 15,
            ErrorCode::DownloadPayloadPubKeyVerificationError => 18,
            ErrorCode::DownloadInvalidMetadataMagicString => 21,
            ErrorCode::DownloadManifestParseError => 24,
            ErrorCode::DownloadOperationHashMismatch => 27,
            ErrorCode::DownloadOperationExecutionError => 28,
            ErrorCode::OmahaResponseInvalid => 34,
            ErrorCode::OmahaRequestHttpError => 37,
            ErrorCode::DownloadIncomplete => 100,
            ErrorCode::OmahaRequestHttpResponse(status) => 2000 + u32::from(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_strings_round_trip() {
        for st in UpdateStatus::ALL {
            assert_eq!(UpdateStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(
            UpdateStatus::UpdatedNeedReboot.as_str(),
            "UPDATE_STATUS_UPDATED_NEED_REBOOT"
        );
        assert_eq!(UpdateStatus::parse("IDLE"), None);
    }

    #[test]
    fn error_codes_match_the_original() {
        assert_eq!(ErrorCode::PayloadHashMismatchError.code(), 10);
        assert_eq!(ErrorCode::DownloadPayloadVerificationError.code(), 12);
        assert_eq!(ErrorCode::OmahaResponseInvalid.code(), 34);
        assert_eq!(ErrorCode::OmahaRequestHttpResponse(500).code(), 2500);
        assert_eq!(ErrorCode::DownloadIncomplete.code(), 100);
    }
}
