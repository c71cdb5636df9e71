//! The v2 auth state (enabled flag, users, roles) as a pure, replicable value, with etcd's permission rules.
//!
//! Every change is an [`AuthOp`] applied identically on each member, so the state can ride in raft entries and
//! snapshots like the key tree. Password hashes are computed by the proposer (hashing is slow and salted, so it
//! must not happen inside apply); members only store and compare them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The built-in role that may do everything, including auth management.
pub const ROOT_ROLE: &str = "root";
/// The user that must exist before auth can be enabled.
pub const ROOT_USER: &str = "root";
/// The role applied to requests without credentials.
pub const GUEST_ROLE: &str = "guest";

/// PBKDF2 rounds: etcd uses bcrypt cost 10 (~50 ms); this is of the same order on one core.
const PBKDF2_ROUNDS: u32 = 100_000;

/// Read and write key patterns of one role; a pattern ending in `*` is a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Patterns readable by the role.
    pub read: BTreeSet<String>,
    /// Patterns writable by the role.
    pub write: BTreeSet<String>,
}

/// One user: a password hash and the roles granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `pbkdf2-sha256$rounds$salt$hash`, both base64.
    pub password_hash: String,
    /// Granted role names.
    pub roles: BTreeSet<String>,
}

/// One change to the auth state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// Turn checking on.
    Enable,
    /// Turn checking off.
    Disable,
    /// Create a user (with a password) or update one (password and/or roles).
    PutUser {
        /// The user.
        name: String,
        /// A new hash, computed by the proposer.
        password_hash: Option<String>,
        /// Roles to add.
        grant: Vec<String>,
        /// Roles to remove.
        revoke: Vec<String>,
        /// Whether the user must not exist yet.
        create: bool,
    },
    /// Remove a user.
    DeleteUser {
        /// The user.
        name: String,
    },
    /// Create a role or change its permissions.
    PutRole {
        /// The role.
        name: String,
        /// Patterns to grant.
        grant: Permissions,
        /// Patterns to revoke.
        revoke: Permissions,
        /// Whether the role must not exist yet.
        create: bool,
    },
    /// Remove a role.
    DeleteRole {
        /// The role.
        name: String,
    },
}

/// Why an auth change or check was refused; the texts are etcd 3.4's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Enable without a root user.
    #[error("auth: No root user available, please create one")]
    NoRootUser,
    /// Enable twice.
    #[error("auth: already enabled")]
    AlreadyEnabled,
    /// Disable twice.
    #[error("auth: already disabled")]
    AlreadyDisabled,
    /// Create an existing user.
    #[error("auth: User {0} already exists.")]
    UserExists(String),
    /// Name a missing user.
    #[error("auth: User {0} does not exist")]
    UserMissing(String),
    /// Create an existing role.
    #[error("auth: Role {0} already exists.")]
    RoleExists(String),
    /// Name a missing role.
    #[error("auth: Role {0} doesn't exist.")]
    RoleMissing(String),
    /// Change or delete the built-in root role.
    #[error("auth: Cannot modify role {0}: is root role.")]
    RootRole(String),
    /// Delete root while auth is on.
    #[error("auth: Cannot delete root user while auth is enabled.")]
    RootWhileEnabled,
    /// Create a user without a password.
    #[error("auth: Cannot create user {0} with an empty password")]
    NoPassword(String),
}

/// The whole v2 auth state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// Whether requests are checked.
    pub enabled: bool,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (never `root`, which is built in).
    pub roles: BTreeMap<String, Permissions>,
}

impl Auth {
    /// Applies one change; the same input gives the same result on every member.
    pub fn apply(&mut self, op: &AuthOp) -> Result<(), AuthError> {
        match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Err(AuthError::AlreadyEnabled);
                }
                if !self.users.contains_key(ROOT_USER) {
                    return Err(AuthError::NoRootUser);
                }
                // etcd creates the guest role with full access on first enable, so turning auth on changes nothing
                // for anonymous clients until the guest role is narrowed.
                self.roles.entry(GUEST_ROLE.to_owned()).or_insert_with(|| {
                    let all: BTreeSet<String> = ["/*".to_owned()].into();
                    Permissions {
                        read: all.clone(),
                        write: all,
                    }
                });
                self.enabled = true;
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Err(AuthError::AlreadyDisabled);
                }
                self.enabled = false;
            }
            AuthOp::PutUser {
                name,
                password_hash,
                grant,
                revoke,
                create,
            } => {
                // etcd 3.4 checks granted roles only when updating a user; a new user may name any role (observed).
                if !create {
                    for role in grant {
                        if role != ROOT_ROLE && !self.roles.contains_key(role) {
                            return Err(AuthError::RoleMissing(role.clone()));
                        }
                    }
                }
                match (self.users.get_mut(name), create) {
                    (Some(_), true) => return Err(AuthError::UserExists(name.clone())),
                    (None, false) => return Err(AuthError::UserMissing(name.clone())),
                    (Some(user), false) => {
                        if let Some(hash) = password_hash {
                            user.password_hash = hash.clone();
                        }
                        user.roles.extend(grant.iter().cloned());
                        for role in revoke {
                            user.roles.remove(role);
                        }
                    }
                    (None, true) => {
                        let Some(hash) = password_hash else {
                            return Err(AuthError::NoPassword(name.clone()));
                        };
                        let mut roles: BTreeSet<String> = grant.iter().cloned().collect();
                        // etcd makes the root user a member of the root role.
                        if name == ROOT_USER {
                            roles.insert(ROOT_ROLE.to_owned());
                        }
                        self.users.insert(
                            name.clone(),
                            User {
                                password_hash: hash.clone(),
                                roles,
                            },
                        );
                    }
                }
            }
            AuthOp::DeleteUser { name } => {
                if name == ROOT_USER && self.enabled {
                    return Err(AuthError::RootWhileEnabled);
                }
                if self.users.remove(name).is_none() {
                    return Err(AuthError::UserMissing(name.clone()));
                }
            }
            AuthOp::PutRole {
                name,
                grant,
                revoke,
                create,
            } => {
                if name == ROOT_ROLE {
                    return Err(AuthError::RootRole(name.clone()));
                }
                match (self.roles.get_mut(name), create) {
                    (Some(_), true) => return Err(AuthError::RoleExists(name.clone())),
                    (None, false) => return Err(AuthError::RoleMissing(name.clone())),
                    (Some(perms), false) => {
                        perms.read.extend(grant.read.iter().cloned());
                        perms.write.extend(grant.write.iter().cloned());
                        for p in &revoke.read {
                            perms.read.remove(p);
                        }
                        for p in &revoke.write {
                            perms.write.remove(p);
                        }
                    }
                    (None, true) => {
                        self.roles.insert(name.clone(), grant.clone());
                    }
                }
            }
            AuthOp::DeleteRole { name } => {
                if name == ROOT_ROLE {
                    return Err(AuthError::RootRole(name.clone()));
                }
                if self.roles.remove(name).is_none() {
                    return Err(AuthError::RoleMissing(name.clone()));
                }
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
            }
        }
        Ok(())
    }

    /// Whether `user` (None = guest) may access `key`; `recursive` asks for the whole subtree, as etcd does for
    /// recursive gets, deletes and watches.
    pub fn allows(&self, user: Option<&str>, key: &str, write: bool, recursive: bool) -> bool {
        if !self.enabled {
            return true;
        }
        let roles: Vec<&str> = match user {
            Some(name) => match self.users.get(name) {
                Some(u) => u.roles.iter().map(String::as_str).collect(),
                None => return false,
            },
            None => vec![GUEST_ROLE],
        };
        roles.iter().any(|role| {
            if *role == ROOT_ROLE {
                return true;
            }
            let Some(perms) = self.roles.get(*role) else {
                return false;
            };
            let list = if write { &perms.write } else { &perms.read };
            list.iter().any(|pat| {
                if recursive {
                    prefix_match(pat, key)
                } else {
                    simple_match(pat, key)
                }
            })
        })
    }

    /// Whether `user` holds the root role (needed for every management call).
    pub fn is_root(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }
}

/// A role as etcd 3.4 serves it (field order matters to byte-exact clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleView<'a> {
    /// The name.
    pub role: &'a str,
    /// `{"kv": {...}}`.
    pub permissions: KvView<'a>,
}

/// The `permissions` object of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvView<'a> {
    /// Read and write patterns.
    pub kv: RwView<'a>,
}

/// Read and write patterns of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RwView<'a> {
    /// Readable patterns.
    pub read: Vec<&'a str>,
    /// Writable patterns.
    pub write: Vec<&'a str>,
}

/// A user with its roles expanded, as etcd 3.4 serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView<'a> {
    /// The name.
    pub user: &'a str,
    /// Expanded roles; etcd omits the field when none is left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleView<'a>>,
}

/// The body of `GET /v2/auth/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsersView<'a> {
    /// Users in name order.
    pub users: Vec<UserView<'a>>,
}

/// The body of `GET /v2/auth/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolesView<'a> {
    /// Roles in name order.
    pub roles: Vec<RoleView<'a>>,
}

impl Auth {
    /// A role as etcd 3.4 serves it; `root` is built in with full access.
    pub fn role_view<'a>(&'a self, name: &'a str) -> Option<RoleView<'a>> {
        let (read, write) = if name == ROOT_ROLE {
            (vec!["/*"], vec!["/*"])
        } else {
            let p = self.roles.get(name)?;
            (
                p.read.iter().map(String::as_str).collect(),
                p.write.iter().map(String::as_str).collect(),
            )
        };
        Some(RoleView {
            role: name,
            permissions: KvView {
                kv: RwView { read, write },
            },
        })
    }

    /// `GET /v2/auth/roles`: every role in name order, root included.
    pub fn roles_view(&self) -> RolesView<'_> {
        let mut names: BTreeSet<&str> = self.roles.keys().map(String::as_str).collect();
        names.insert(ROOT_ROLE);
        let roles = names
            .into_iter()
            .filter_map(|n| self.role_view(n))
            .collect();
        RolesView { roles }
    }

    /// One user with its roles expanded, as in `GET /v2/auth/users[/name]`; roles that no longer exist are left
    /// out, as etcd 3.4 does (observed).
    pub fn user_view<'a>(&'a self, name: &'a str) -> Option<UserView<'a>> {
        let user = self.users.get(name)?;
        let roles = user
            .roles
            .iter()
            .filter_map(|r| self.role_view(r))
            .collect();
        Some(UserView { user: name, roles })
    }

    /// `GET /v2/auth/users`: every user in name order.
    pub fn users_view(&self) -> UsersView<'_> {
        let users = self
            .users
            .keys()
            .filter_map(|n| self.user_view(n))
            .collect();
        UsersView { users }
    }
}

/// etcd's `simpleMatch`: a trailing `*` matches any suffix, otherwise the key must be equal.
fn simple_match(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

/// etcd's `prefixMatch`: only a `*` pattern can cover a whole subtree.
fn prefix_match(pattern: &str, key: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|prefix| key.starts_with(prefix))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA256 (RFC 8018), one 32-byte block.
fn pbkdf2(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut msg = salt.to_vec();
    msg.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &msg);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// Hashes a new password with a fresh salt; slow by design, so call it off the async runtime.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let hash = pbkdf2(password.as_bytes(), &salt, PBKDF2_ROUNDS);
    format!(
        "pbkdf2-sha256${PBKDF2_ROUNDS}${}${}",
        b64.encode(salt),
        b64.encode(hash)
    )
}

/// Checks a password against a stored hash; slow by design, so call it off the async runtime.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(hash)) =
        (rounds.parse::<u32>(), b64.decode(salt), b64.decode(hash))
    else {
        return false;
    };
    if rounds == 0 {
        return false;
    }
    let got = pbkdf2(password.as_bytes(), &salt, rounds);
    // Constant-time comparison so timing does not leak how much of the hash matched.
    got.len() == hash.len() && got.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Remembers verified (user, password, stored hash) triples, as etcd caches bcrypt results, so that every
/// authenticated request does not pay for a full hash; a password change alters the stored hash and so misses.
#[derive(Debug, Default)]
pub struct CredentialCache {
    verified: Mutex<HashMap<(String, [u8; 32]), String>>,
}

impl CredentialCache {
    /// Whether this exact password was already verified against `stored` for `user`.
    pub fn hit(&self, user: &str, password: &str, stored: &str) -> bool {
        let key = (user.to_owned(), Sha256::digest(password.as_bytes()).into());
        self.verified
            .lock()
            .map(|m| m.get(&key).is_some_and(|h| h == stored))
            .unwrap_or(false)
    }

    /// Records a successful verification.
    pub fn insert(&self, user: &str, password: &str, stored: &str) {
        let key = (user.to_owned(), Sha256::digest(password.as_bytes()).into());
        if let Ok(mut m) = self.verified.lock() {
            // Bound memory against clients cycling through many passwords.
            if m.len() >= 1024 {
                m.clear();
            }
            m.insert(key, stored.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, roles: &[&str]) -> AuthOp {
        AuthOp::PutUser {
            name: name.into(),
            password_hash: Some(format!("h-{name}")),
            grant: roles.iter().map(|r| r.to_string()).collect(),
            revoke: vec![],
            create: true,
        }
    }

    fn perms(read: &[&str], write: &[&str]) -> Permissions {
        Permissions {
            read: read.iter().map(|s| s.to_string()).collect(),
            write: write.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn enable_needs_root_and_creates_guest() {
        let mut a = Auth::default();
        assert_eq!(a.apply(&AuthOp::Enable), Err(AuthError::NoRootUser));
        a.apply(&user("root", &[])).unwrap();
        assert!(a.is_root("root"));
        a.apply(&AuthOp::Enable).unwrap();
        assert_eq!(a.apply(&AuthOp::Enable), Err(AuthError::AlreadyEnabled));
        assert!(a.allows(None, "/any/key", true, true));
        assert_eq!(
            a.apply(&AuthOp::DeleteUser {
                name: "root".into()
            }),
            Err(AuthError::RootWhileEnabled)
        );
        a.apply(&AuthOp::Disable).unwrap();
        assert_eq!(a.apply(&AuthOp::Disable), Err(AuthError::AlreadyDisabled));
    }

    #[test]
    fn roles_grant_exact_and_prefix_access() {
        let mut a = Auth::default();
        a.apply(&user("root", &[])).unwrap();
        a.apply(&AuthOp::PutRole {
            name: "app".into(),
            grant: perms(&["/app/*", "/one"], &["/app/*"]),
            revoke: Permissions::default(),
            create: true,
        })
        .unwrap();
        a.apply(&user("alice", &["app"])).unwrap();
        a.apply(&AuthOp::Enable).unwrap();
        a.apply(&AuthOp::PutRole {
            name: "guest".into(),
            grant: Permissions::default(),
            revoke: perms(&["/*"], &["/*"]),
            create: false,
        })
        .unwrap();
        assert!(!a.allows(None, "/app/x", false, false));
        assert!(a.allows(Some("alice"), "/app/x", true, false));
        assert!(a.allows(Some("alice"), "/one", false, false));
        assert!(!a.allows(Some("alice"), "/one", true, false));
        assert!(
            !a.allows(Some("alice"), "/one", false, true),
            "an exact key grants no subtree"
        );
        assert!(a.allows(Some("alice"), "/app/dir", false, true));
        // etcd 3.4 refuses a recursive get of `/app` itself with only `/app/*` (observed).
        assert!(!a.allows(Some("alice"), "/app", false, true));
        assert!(!a.allows(Some("mallory"), "/app/x", false, false));
        assert!(a.allows(Some("root"), "/anything", true, true));
        a.apply(&AuthOp::DeleteRole { name: "app".into() }).unwrap();
        assert!(!a.allows(Some("alice"), "/app/x", false, false));
        assert_eq!(
            a.apply(&AuthOp::DeleteRole {
                name: "root".into()
            }),
            Err(AuthError::RootRole("root".into()))
        );
        assert_eq!(
            a.apply(&user("alice", &[])),
            Err(AuthError::UserExists("alice".into()))
        );
        // etcd 3.4 accepts unknown roles on create (observed), but not when granting to an existing user.
        a.apply(&user("bob", &["nope"])).unwrap();
        let grant = AuthOp::PutUser {
            name: "bob".into(),
            password_hash: None,
            grant: vec!["gone".into()],
            revoke: vec![],
            create: false,
        };
        assert_eq!(a.apply(&grant), Err(AuthError::RoleMissing("gone".into())));
    }

    #[test]
    fn listings_match_etcd_bodies() {
        let mut a = Auth::default();
        a.apply(&user("root", &[])).unwrap();
        a.apply(&AuthOp::PutRole {
            name: "app".into(),
            grant: perms(&["/app/*"], &["/app/*"]),
            revoke: Permissions::default(),
            create: true,
        })
        .unwrap();
        a.apply(&user("alice", &["app"])).unwrap();
        a.apply(&user("bob", &["nope"])).unwrap();
        // Bodies recorded from Debian's etcd 3.4 for the same sequence.
        let users = r#"{"users":[{"user":"alice","roles":[{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}}]},{"user":"bob"},{"user":"root","roles":[{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}]}]}"#;
        let roles = r#"{"roles":[{"role":"app","permissions":{"kv":{"read":["/app/*"],"write":["/app/*"]}}},{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}]}"#;
        let got = serde_json::to_string(&a.users_view()).unwrap();
        assert_eq!(got, users);
        let got = serde_json::to_string(&a.roles_view()).unwrap();
        assert_eq!(got, roles);
    }

    #[test]
    fn state_survives_a_serde_round_trip() {
        let mut a = Auth::default();
        a.apply(&user("root", &[])).unwrap();
        a.apply(&AuthOp::Enable).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        let back: Auth = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn pbkdf2_matches_rfc_7914_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, first 32 bytes.
        let got = pbkdf2(b"passwd", b"salt", 1);
        let want = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn passwords_verify_and_cache() {
        let stored = hash_password("s3cret");
        assert!(verify_password("s3cret", &stored));
        assert!(!verify_password("wrong", &stored));
        assert!(!verify_password("s3cret", "garbage"));
        let cache = CredentialCache::default();
        assert!(!cache.hit("u", "s3cret", &stored));
        cache.insert("u", "s3cret", &stored);
        assert!(cache.hit("u", "s3cret", &stored));
        assert!(!cache.hit("u", "other", &stored));
        assert!(!cache.hit("u", "s3cret", "changed-hash"));
    }
}
