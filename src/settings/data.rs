//! The data plane's settings.

use super::SettingsError;
use crate::{
    config::RunArgs,
    data::{Class, DataConfig, LinkPolicy, LinkSettings, Pattern},
};

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
        links: link_settings(args)?,
    })
}

/// `--priority`, `--latest-value` and `--link-rate`.
fn link_settings(args: &RunArgs) -> Result<LinkSettings, SettingsError> {
    let bad = |flag: &str, value: &str, problem: String, example| SettingsError::LinkPolicy {
        name: args.origins.name(flag),
        value: value.to_string(),
        problem,
        example,
    };
    const PRIORITY: &str = "--priority 'alerts/**=urgent'";
    let mut priorities = Vec::new();
    for v in &args.priority {
        let Some((pattern, class)) = v.rsplit_once('=') else {
            let p = "not PATTERN=CLASS".to_string();
            return Err(bad("priority", v, p, PRIORITY));
        };
        let pattern =
            Pattern::parse(pattern).map_err(|e| bad("priority", v, e.to_string(), PRIORITY))?;
        let class: Class = class.parse().map_err(|e: crate::data::class::ClassError| {
            bad("priority", v, e.to_string(), PRIORITY)
        })?;
        priorities.push((pattern, class));
    }
    let latest_value = args
        .latest_value
        .iter()
        .map(|v| {
            Pattern::parse(v).map_err(|e| {
                bad(
                    "latest_value",
                    v,
                    e.to_string(),
                    "--latest-value 'tracks/*'",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LinkSettings {
        policy: LinkPolicy {
            priorities,
            latest_value,
        },
        rate_cap: args.link_rate,
    })
}
