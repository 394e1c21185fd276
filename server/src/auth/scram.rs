//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server side (RFC 5802, RFC 7677), against the
//! stored secrets (salt, iterations, StoredKey, ServerKey): the password is never needed.
//! Channel bindings: `tls-exporter` (RFC 9266, TLS 1.3) and `tls-server-end-point`
//! (RFC 5929); the caller says which ones the connection has and supplies their data.
//!
//! Protocol only, no I/O and no storage: [`ClientFirst::parse`] reads the first client
//! message, [`negotiate_binding`] decides whether its GS2 flag fits the mechanism and
//! the connection, [`Exchange::start`] makes the server-first-message, and
//! [`Exchange::finish`] checks the client-final-message and makes the server-final one.
//!
//! Why not a crate: rsasl 2.2 was evaluated. Its SCRAM server answers an unknown user
//! with a fresh random salt on every attempt (asking twice tells whether an account
//! exists), compares StoredKey with `==`, ignores the authorisation identity, and asks
//! for the stored secrets through a synchronous callback while ours come from async
//! storage. The exchange is small; it is written here on the RFC's terms, with
//! constant-time comparisons, and tested against the RFC 7677 vector and an
//! independent client (Python's scramp, see `tests/interop/scram_check.py`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;

use super::credentials::{hmac_sha256, sha256};

/// RFC 9266 channel binding type.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// RFC 5929 channel binding type.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Random bytes in the server's part of the nonce (base64-encoded on the wire).
const SERVER_NONCE_BYTES: usize = 24;

/// Which of the two mechanisms the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `SCRAM-SHA-256`: no channel binding.
    Sha256,
    /// `SCRAM-SHA-256-PLUS`: channel binding required.
    Sha256Plus,
}

/// The GS2 channel binding flag of the client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<type>`: the client binds to this channel binding type.
    Bind(String),
}

/// Why a SCRAM exchange failed. Logged, never shown: the client always sees
/// `NO [AUTHENTICATIONFAILED]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message ({0})")]
    Malformed(&'static str),
    /// The client asked for a mandatory extension (`m=`), which we do not support.
    #[error("unsupported mandatory SCRAM extension")]
    Extension,
    /// The client said `y` (it would bind, but thinks we cannot) while we offer
    /// -PLUS: someone removed -PLUS from our capabilities on the way.
    #[error("channel binding downgrade: client flag y while -PLUS is offered")]
    Downgrade,
    /// SCRAM-SHA-256-PLUS without `p=`.
    #[error("SCRAM-SHA-256-PLUS without channel binding")]
    BindingRequired,
    /// `p=` with SCRAM-SHA-256.
    #[error("channel binding requested with SCRAM-SHA-256 (not -PLUS)")]
    BindingNotAllowed,
    /// A channel binding type this connection does not have.
    #[error("unsupported channel binding type")]
    UnsupportedBinding,
    /// The channel binding data (`c=`) is not the GS2 header and binding we expected.
    #[error("channel binding data does not match")]
    BindingMismatch,
    /// The nonce of the client-final-message is not the one of the exchange.
    #[error("nonce mismatch")]
    Nonce,
    /// The proof is wrong: wrong password, unknown user, or tampering.
    #[error("invalid proof")]
    Proof,
}

/// A parsed client-first-message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The channel binding flag.
    pub flag: Gs2Flag,
    /// The authorisation identity (`a=`), decoded; `None` when absent.
    pub authzid: Option<String>,
    /// The authentication identity (`n=`), decoded.
    pub username: String,
    nonce: String,
    /// `gs2-header`: the flag and authzid part including the second comma.
    gs2_header: String,
    /// `client-first-message-bare`.
    bare: String,
}

impl std::fmt::Debug for ClientFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFirst")
            .field("flag", &self.flag)
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare` (RFC 5802 section 7).
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (flag_text, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let flag = match flag_text {
            "n" => Gs2Flag::No,
            "y" => Gs2Flag::ClientOnly,
            _ => {
                let name = flag_text
                    .strip_prefix("p=")
                    .ok_or(ScramError::Malformed("GS2 flag"))?;
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                {
                    return Err(ScramError::Malformed("channel binding name"));
                }
                Gs2Flag::Bind(name.to_owned())
            }
        };
        let (authz_text, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let authzid = match authz_text {
            "" => None,
            _ => Some(decode_saslname(
                authz_text
                    .strip_prefix("a=")
                    .ok_or(ScramError::Malformed("authzid"))?,
            )?),
        };
        let gs2_header = text[..text.len() - bare.len()].to_owned();

        let mut attributes = bare.split(',');
        let mut first = attributes.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(ScramError::Extension);
        }
        let username = decode_saslname(
            first
                .strip_prefix("n=")
                .ok_or(ScramError::Malformed("username"))?,
        )?;
        first = attributes.next().unwrap_or_default();
        let nonce = first
            .strip_prefix("r=")
            .ok_or(ScramError::Malformed("nonce"))?;
        if nonce.is_empty() || !nonce.bytes().all(is_nonce_char) {
            return Err(ScramError::Malformed("nonce"));
        }
        // Optional extensions follow; each must at least look like `x=...`.
        for extension in attributes {
            check_extension(extension)?;
        }
        Ok(ClientFirst {
            flag,
            authzid,
            username,
            nonce: nonce.to_owned(),
            gs2_header,
            bare: bare.to_owned(),
        })
    }
}

/// Checks the client's GS2 flag against the mechanism and the channel binding types
/// this connection has (`offered`: empty when -PLUS is not advertised). Returns the
/// binding type to use, if any (RFC 5802 section 6).
pub fn negotiate_binding<'a>(
    flag: &Gs2Flag,
    variant: Variant,
    offered: &[&'a str],
) -> Result<Option<&'a str>, ScramError> {
    match (variant, flag) {
        (Variant::Sha256, Gs2Flag::No) => Ok(None),
        (Variant::Sha256, Gs2Flag::ClientOnly) if offered.is_empty() => Ok(None),
        (Variant::Sha256, Gs2Flag::ClientOnly) => Err(ScramError::Downgrade),
        (Variant::Sha256, Gs2Flag::Bind(_)) => Err(ScramError::BindingNotAllowed),
        (Variant::Sha256Plus, Gs2Flag::No | Gs2Flag::ClientOnly) => {
            Err(ScramError::BindingRequired)
        }
        (Variant::Sha256Plus, Gs2Flag::Bind(name)) => offered
            .iter()
            .copied()
            .find(|o| *o == name)
            .map(Some)
            .ok_or(ScramError::UnsupportedBinding),
    }
}

/// What the server verifies against: the stored secrets, or (for a user who does not
/// exist) a stand-in with the same shape that no proof can match.
pub struct Verifier {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scram::Verifier(<redacted>)")
    }
}

impl Verifier {
    /// The stored secrets; `None` if the keys are not 32 bytes (a corrupt record).
    pub fn stored(
        salt: Vec<u8>,
        iterations: u32,
        stored_key: &[u8],
        server_key: &[u8],
    ) -> Option<Verifier> {
        Some(Verifier {
            salt,
            iterations,
            stored_key: stored_key.try_into().ok()?,
            server_key: server_key.try_into().ok()?,
        })
    }

    /// A stand-in for a user that does not exist: the salt and iterations the caller
    /// announces (stable per username, see `credentials::Verifier::dummy_scram_params`)
    /// and random keys, so the exchange runs to the proof and fails there.
    pub fn dummy(salt: Vec<u8>, iterations: u32) -> Verifier {
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        OsRng.fill_bytes(&mut stored_key);
        OsRng.fill_bytes(&mut server_key);
        Verifier {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.stored_key);
        zeroize::Zeroize::zeroize(&mut self.server_key);
    }
}

/// An exchange between the server-first and the client-final message.
pub struct Exchange {
    verifier: Verifier,
    /// `gs2-header || cbind-data`: what `c=` must carry, base64-encoded.
    cbind_input: Vec<u8>,
    /// Client nonce followed by the server's.
    nonce: String,
    /// `client-first-message-bare "," server-first-message`.
    auth_prefix: String,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scram::Exchange(<redacted>)")
    }
}

impl Exchange {
    /// Starts the exchange: returns it and the server-first-message to send.
    /// `binding_data` is the channel binding data of the type [`negotiate_binding`]
    /// chose (empty when none).
    pub fn start(
        client: &ClientFirst,
        verifier: Verifier,
        binding_data: &[u8],
    ) -> (Exchange, String) {
        let mut server_nonce = [0u8; SERVER_NONCE_BYTES];
        OsRng.fill_bytes(&mut server_nonce);
        let nonce = format!("{}{}", client.nonce, B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let mut cbind_input = client.gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(binding_data);
        let exchange = Exchange {
            verifier,
            cbind_input,
            nonce,
            auth_prefix: format!("{},{server_first}", client.bare),
        };
        (exchange, server_first)
    }

    /// Checks the client-final-message; on success returns the server-final-message
    /// (`v=ServerSignature`).
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof_text) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        for extension in attributes {
            check_extension(extension)?;
        }
        let binding = B64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding base64"))?;
        let proof = B64
            .decode(proof_text)
            .map_err(|_| ScramError::Malformed("proof base64"))?;
        let proof: [u8; 32] = proof
            .as_slice()
            .try_into()
            .map_err(|_| ScramError::Malformed("proof length"))?;

        if !bool::from(binding.as_slice().ct_eq(self.cbind_input.as_slice())) {
            return Err(ScramError::BindingMismatch);
        }
        if !bool::from(nonce.as_bytes().ct_eq(self.nonce.as_bytes())) {
            return Err(ScramError::Nonce);
        }

        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let client_signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        let matches = sha256(&client_key).ct_eq(&self.verifier.stored_key);
        zeroize::Zeroize::zeroize(&mut client_key);
        if !bool::from(matches) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error; not empty.
fn decode_saslname(text: &str) -> Result<String, ScramError> {
    if text.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("name escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `printable = %x21-2B / %x2D-7E` (no comma).
fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// An optional extension: `ALPHA "=" value`. A mandatory one (`m=`) is refused.
fn check_extension(attribute: &str) -> Result<(), ScramError> {
    let mut bytes = attribute.bytes();
    match (bytes.next(), bytes.next()) {
        (Some(b'm'), Some(b'=')) => Err(ScramError::Extension),
        (Some(a), Some(b'=')) if a.is_ascii_alphabetic() => Ok(()),
        _ => Err(ScramError::Malformed("attribute")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::auth::credentials::{scram_password, scram_secrets};
    use crate::auth::secret::Secret;

    /// A minimal client, written from RFC 5802 section 3, for round trips.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind_input: &[u8],
    ) -> (String, String) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(fields[1].strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let server_key = hmac_sha256(&salted, b"Server Key");
        let without_proof = format!("c={},r={nonce}", B64.encode(cbind_input));
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = hmac_sha256(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(server_signature)),
        )
    }

    fn verifier_for(password: &str, salt: &[u8]) -> Verifier {
        let s = scram_secrets(scram_password(&Secret::from(password)).expose(), salt, 4096);
        Verifier::stored(salt.to_vec(), 4096, &s.stored_key, &s.server_key).unwrap()
    }

    #[test]
    fn parse_client_first() {
        let c = ClientFirst::parse(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(c.flag, Gs2Flag::No);
        assert_eq!(c.authzid, None);
        assert_eq!(c.username, "user");
        assert_eq!(c.gs2_header, "n,,");
        assert_eq!(c.bare, "n=user,r=fyko+d2lbbFgONRv9qkxdawL");

        let c = ClientFirst::parse(b"p=tls-exporter,a=al=2Cice,n=b=3Dob,r=abc,x=ext").unwrap();
        assert_eq!(c.flag, Gs2Flag::Bind("tls-exporter".into()));
        assert_eq!(c.authzid.as_deref(), Some("al,ice"));
        assert_eq!(c.username, "b=ob");
        assert_eq!(c.gs2_header, "p=tls-exporter,a=al=2Cice,");

        assert_eq!(
            ClientFirst::parse(b"y,,n=u,r=x").unwrap().flag,
            Gs2Flag::ClientOnly
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed("no GS2 header")),
            (b"n,", ScramError::Malformed("no GS2 header")),
            (b"x,,n=u,r=a", ScramError::Malformed("GS2 flag")),
            (
                b"p=,,n=u,r=a",
                ScramError::Malformed("channel binding name"),
            ),
            (
                b"p=a b,,n=u,r=a",
                ScramError::Malformed("channel binding name"),
            ),
            (b"n,b=x,n=u,r=a", ScramError::Malformed("authzid")),
            (b"n,,m=x,n=u,r=a", ScramError::Extension),
            (b"n,,n=u,r=a,m=x", ScramError::Extension),
            (b"n,,r=a", ScramError::Malformed("username")),
            (b"n,,n=,r=a", ScramError::Malformed("empty name")),
            (b"n,,n=a=2,r=a", ScramError::Malformed("name escape")),
            (b"n,,n=a=41,r=a", ScramError::Malformed("name escape")),
            (b"n,,n=u", ScramError::Malformed("nonce")),
            (b"n,,n=u,r=", ScramError::Malformed("nonce")),
            (b"n,,n=u,r=a b", ScramError::Malformed("nonce")),
            (b"n,,n=u,r=a,=x", ScramError::Malformed("attribute")),
            (b"n,,n=\xff,r=a", ScramError::Malformed("not UTF-8")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ClientFirst::parse(input).err(),
                Some(*expected),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn binding_negotiation() {
        use Gs2Flag::*;
        use Variant::*;
        let both = [TLS_EXPORTER, TLS_SERVER_END_POINT];
        let bind = |n: &str| Bind(n.to_owned());
        assert_eq!(negotiate_binding(&No, Sha256, &both), Ok(None));
        assert_eq!(negotiate_binding(&No, Sha256, &[]), Ok(None));
        assert_eq!(negotiate_binding(&ClientOnly, Sha256, &[]), Ok(None));
        assert_eq!(
            negotiate_binding(&ClientOnly, Sha256, &both),
            Err(ScramError::Downgrade)
        );
        assert_eq!(
            negotiate_binding(&bind(TLS_EXPORTER), Sha256, &both),
            Err(ScramError::BindingNotAllowed)
        );
        assert_eq!(
            negotiate_binding(&No, Sha256Plus, &both),
            Err(ScramError::BindingRequired)
        );
        assert_eq!(
            negotiate_binding(&ClientOnly, Sha256Plus, &both),
            Err(ScramError::BindingRequired)
        );
        assert_eq!(
            negotiate_binding(&bind(TLS_EXPORTER), Sha256Plus, &both),
            Ok(Some(TLS_EXPORTER))
        );
        assert_eq!(
            negotiate_binding(&bind("tls-unique"), Sha256Plus, &both),
            Err(ScramError::UnsupportedBinding)
        );
        assert_eq!(
            negotiate_binding(&bind(TLS_EXPORTER), Sha256Plus, &[TLS_SERVER_END_POINT]),
            Err(ScramError::UnsupportedBinding)
        );
    }

    /// RFC 7677 section 3, played through [`Exchange`] with the RFC's nonces.
    #[test]
    fn rfc7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let client = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (mut exchange, _) = Exchange::start(&client, verifier_for("pencil", &salt), &[]);
        // Replace our random server nonce with the RFC's, so its proof applies.
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        exchange.auth_prefix = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{server_first}");
        let server_final = exchange
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn round_trip_and_failures() {
        let salt = b"0123456789abcdef".to_vec();
        let first = b"n,,n=alice,r=clientnonce";
        let client = ClientFirst::parse(first).unwrap();
        let bare = "n=alice,r=clientnonce";

        // Right password.
        let (exchange, server_first) = Exchange::start(&client, verifier_for("pw", &salt), &[]);
        assert!(server_first.starts_with("r=clientnonce"));
        assert!(server_first.ends_with(",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"));
        let (final_msg, expected) = client_final("pw", bare, &server_first, b"n,,");
        assert_eq!(exchange.finish(final_msg.as_bytes()), Ok(expected));

        // Wrong password.
        let (exchange, server_first) = Exchange::start(&client, verifier_for("pw", &salt), &[]);
        let (final_msg, _) = client_final("wrong", bare, &server_first, b"n,,");
        assert_eq!(
            exchange.finish(final_msg.as_bytes()),
            Err(ScramError::Proof)
        );

        // Tampered proof: one bit flipped.
        let (exchange, server_first) = Exchange::start(&client, verifier_for("pw", &salt), &[]);
        let (final_msg, _) = client_final("pw", bare, &server_first, b"n,,");
        let (head, proof) = final_msg.rsplit_once(",p=").unwrap();
        let mut raw = B64.decode(proof).unwrap();
        raw[7] ^= 0x10;
        let tampered = format!("{head},p={}", B64.encode(raw));
        assert_eq!(exchange.finish(tampered.as_bytes()), Err(ScramError::Proof));

        // Unknown user: the dummy verifier fails at the proof, whatever the password.
        let (exchange, server_first) =
            Exchange::start(&client, Verifier::dummy(salt.clone(), 4096), &[]);
        assert!(server_first.ends_with(",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"));
        let (final_msg, _) = client_final("pw", bare, &server_first, b"n,,");
        assert_eq!(
            exchange.finish(final_msg.as_bytes()),
            Err(ScramError::Proof)
        );

        // Wrong nonce.
        let (exchange, server_first) = Exchange::start(&client, verifier_for("pw", &salt), &[]);
        let forged = server_first.replacen("r=clientnonce", "r=clientnoncX", 1);
        let (final_msg, _) = client_final("pw", bare, &forged, b"n,,");
        assert_eq!(
            exchange.finish(final_msg.as_bytes()),
            Err(ScramError::Nonce)
        );

        // Malformed finals.
        for bad in [
            &b"c=biws,r=x"[..],
            b"r=x,c=biws,p=AAAA",
            b"c=biws,r=x,p=!!",
            b"c=biws,r=x,p=AAAA",
            b"c=###,r=x,p=AAAA",
        ] {
            let (exchange, _) = Exchange::start(&client, verifier_for("pw", &salt), &[]);
            assert!(
                matches!(exchange.finish(bad), Err(ScramError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn channel_binding_data_is_checked() {
        let salt = b"0123456789abcdef".to_vec();
        let client = ClientFirst::parse(b"p=tls-exporter,,n=alice,r=cn").unwrap();
        let binding = [7u8; 32];
        let mut input = b"p=tls-exporter,,".to_vec();
        input.extend_from_slice(&binding);

        let (exchange, server_first) =
            Exchange::start(&client, verifier_for("pw", &salt), &binding);
        let (final_msg, expected) = client_final("pw", "n=alice,r=cn", &server_first, &input);
        assert_eq!(exchange.finish(final_msg.as_bytes()), Ok(expected));

        // The client saw another channel (a man in the middle): other binding data.
        let (exchange, server_first) =
            Exchange::start(&client, verifier_for("pw", &salt), &binding);
        let mut other = b"p=tls-exporter,,".to_vec();
        other.extend_from_slice(&[8u8; 32]);
        let (final_msg, _) = client_final("pw", "n=alice,r=cn", &server_first, &other);
        assert_eq!(
            exchange.finish(final_msg.as_bytes()),
            Err(ScramError::BindingMismatch)
        );

        // A client that claims `n` in the final message after `p` in the first.
        let (exchange, server_first) =
            Exchange::start(&client, verifier_for("pw", &salt), &binding);
        let (final_msg, _) = client_final("pw", "n=alice,r=cn", &server_first, b"n,,");
        assert_eq!(
            exchange.finish(final_msg.as_bytes()),
            Err(ScramError::BindingMismatch)
        );
    }
}
