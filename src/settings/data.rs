//! The data plane's settings.

use super::SettingsError;
use crate::{config::RunArgs, data::DataConfig};

/// Room a retained entry needs besides its payload.
const ENTRY_ROOM: u64 = 1024;

pub fn from_args(args: &RunArgs) -> Result<DataConfig, SettingsError> {
    // A store smaller than one message could never keep the largest retained value.
    if args.max_retained_bytes < args.max_message_bytes + ENTRY_ROOM {
        return Err(SettingsError::RetainedBelowMessage {
            retained_name: args.origins.name("max_retained_bytes"),
            retained: args.max_retained_bytes,
            message_name: args.origins.name("max_message_bytes"),
            message: args.max_message_bytes,
        });
    }
    Ok(DataConfig {
        data_dir: args.data_dir.clone(),
        max_message_bytes: args.max_message_bytes as usize,
        max_retained_bytes: args.max_retained_bytes,
        sync_interval: args.data_sync_interval.duration(),
        max_publish_rate: args.max_publish_rate,
        max_app_publish_rate: args.max_app_publish_rate,
        max_peer_rate: args.max_peer_rate,
        origin_check: args.origin_check,
    })
}
