//! The HTTP admin API (INTERFACES.md 7): the provisioning operations of [`crate::admin`]
//! for subscription systems that call over the network.

use axum::Router;

use super::AppState;

/// The admin routes (none yet).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
