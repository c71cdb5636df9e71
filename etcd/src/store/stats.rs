//! Store operation counters (`/v2/stats/store`); in memory, reset on restart, as in etcd.

use serde::Serialize;

/// Success and failure counters per operation kind, in etcd's JSON field order.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Successful gets.
    pub gets_success: u64,
    /// Failed gets.
    pub gets_fail: u64,
    /// Successful sets.
    pub sets_success: u64,
    /// Failed sets.
    pub sets_fail: u64,
    /// Successful deletes.
    pub delete_success: u64,
    /// Failed deletes.
    pub delete_fail: u64,
    /// Successful updates.
    pub update_success: u64,
    /// Failed updates.
    pub update_fail: u64,
    /// Successful creates.
    pub create_success: u64,
    /// Failed creates.
    pub create_fail: u64,
    /// Successful compare-and-swaps.
    pub compare_and_swap_success: u64,
    /// Failed compare-and-swaps.
    pub compare_and_swap_fail: u64,
    /// Successful compare-and-deletes.
    pub compare_and_delete_success: u64,
    /// Failed compare-and-deletes.
    pub compare_and_delete_fail: u64,
    /// Keys expired.
    pub expire_count: u64,
    /// Watchers registered.
    pub watchers: u64,
}
