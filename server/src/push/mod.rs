//! Push: provisioning documents, the push whitelist and the decision (INTERFACES.md 6).
//!
//! # Layout
//! - [`tree`]: the one tree both decoders produce ([`ProvDoc`]) and the PROV checks.
//! - [`xml`]: XML provisioning documents (quick-xml tokenises, no entity expansion
//!   beyond the predefined ones).
//! - [`wbxml`]: our WBXML 1.1-1.3 decoder; `prov_tokens` holds the PROV token tables.
//! - [`whitelist`]: the entries a document gives ([`whitelist::load`]) and FQDN
//!   resolution ([`whitelist::resolve_fqdns`]).
//! - [`mod@decide`]: the pure decision ([`decide()`]) over an [`Origin`].
//! - [`ip`], [`e164`], [`sip_uri`]: how each kind of origin is compared.
//! - [`deliver`]: the message an accepted push becomes, appended to the mailbox.
//! - [`ingress`]: what the HTTP and SIP ingress and `whitelist check` share.
//!
//! The ingress (HTTP, SIP) and the CLI call, in order: [`whitelist::load`] (document →
//! entries), [`whitelist::resolve_fqdns`], `Store::set_whitelist`; and per push: build
//! an [`Origin`] (for `X-Push-Origin-SMSC` with [`parse_smsc_header`]), find what the
//! subscriber has provisioned for the push's context ([`Provisioning`], with
//! [`ingress::provisioning_for`]), and call [`decide()`].

pub mod decide;
pub mod deliver;
pub mod e164;
pub mod ingress;
pub mod ip;
mod prov_tokens;
pub mod sip_uri;
pub mod tree;
pub mod wbxml;
pub mod whitelist;
pub mod xml;

pub use decide::{
    Decision, Origin, Provisioning, Reason, decide, parse_smsc_header, try_parse_smsc_header,
};
pub use tree::{Characteristic, DocError, Location, Parm, ProvDoc};
pub use whitelist::{Format, LoadError, ResolveFailure, load, resolve_fqdns};
