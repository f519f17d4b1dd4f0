//! Where the state lives: a SQLite file (the default, `DATA/state.sqlite`) or a PostgreSQL
//! database (`kiln daemon --database-url postgres://…`), and how to connect to either.
//!
//! Both go through sqlx's `Any` driver, so every query in [`super`] is written once, with
//! `$N` placeholders (which SQLite accepts too). Each backend has its own migrations
//! directory with the same version numbers and the same schema. Deliberately absent: any
//! other backend, and any SQL that differs between backends outside the few lock clauses
//! chosen by [`Backend`] (docs/adr/0002-state-backends.md).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection as _};
use sqlx::{ConnectOptions as _, Executor as _};

use super::StateError;

/// The SQLite schema. These files are checksummed by sqlx in every existing database: never
/// edit one, add a new one (and its PostgreSQL twin).
pub(super) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The same schema for PostgreSQL.
pub(super) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a [`super::State`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the controller's state lives, as given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database named by a `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// Why a `--database-url` is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatabaseUrlError {
    #[error(
        "unsupported database URL scheme {scheme:?}; use postgres://USER@HOST:PORT/DB or sqlite:PATH"
    )]
    Scheme { scheme: String },
    #[error("sqlite: URL names no file; use sqlite:PATH")]
    NoPath,
}

impl FromStr for Database {
    type Err = DatabaseUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = url.split_once(':').unwrap_or((url, ""));
        match scheme {
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(DatabaseUrlError::NoPath);
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            _ => Err(DatabaseUrlError::Scheme {
                scheme: scheme.to_owned(),
            }),
        }
    }
}

impl Database {
    /// The engine this database runs on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Shows the database without its password, so it can go into errors and logs.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => match AnyConnectOptions::from_str(url) {
                Ok(AnyConnectOptions {
                    database_url: mut u,
                    ..
                }) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("REDACTED"));
                    }
                    write!(f, "{u}")
                }
                Err(_) => f.write_str("postgres://(unparseable URL)"),
            },
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

/// The connections a [`super::State`] uses.
pub(super) struct Pools {
    /// Everything that writes, and the reads on the dispatch path. On SQLite one connection:
    /// SQLite runs one write transaction at a time anyway, and a commit on one connection
    /// makes every other connection drop its page cache and re-map the file at its next
    /// transaction. With four connections taking turns, that re-reading was a fifth of the
    /// daemon's CPU per step.
    pub writer: AnyPool,
    /// Read-only views that may be large (a run with all its steps): on SQLite, connections
    /// of their own (`query_only`), so that a client reading a big run does not hold up
    /// reports and claims; on PostgreSQL, the writer's pool.
    pub readers: AnyPool,
}

/// Opens the pools on `db` and brings its schema up to date.
pub(super) async fn connect(db: &Database) -> Result<Pools, StateError> {
    sqlx::any::install_default_drivers();
    let open_err = |source| StateError::Open {
        database: db.to_string(),
        source,
    };
    let pools = match db {
        Database::Sqlite(path) => {
            let writer = connect_sqlite(path, SqliteRole::Writer)
                .await
                .map_err(open_err)?;
            let readers = connect_sqlite(path, SqliteRole::Reader)
                .await
                .map_err(open_err)?;
            Pools { writer, readers }
        }
        Database::Postgres(url) => {
            let options = AnyConnectOptions::from_str(url).map_err(open_err)?;
            // One connection first: its error says why (refused, authentication, no such
            // database), where the pool's would only say that it timed out.
            AnyConnection::connect_with(&options)
                .await
                .map_err(open_err)?
                .close()
                .await
                .map_err(open_err)?;
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await
                .map_err(open_err)?;
            Pools {
                writer: pool.clone(),
                readers: pool,
            }
        }
    };
    let migrator = match db.backend() {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    migrator
        .run(&pools.writer)
        .await
        .map_err(StateError::Migrate)?;
    Ok(pools)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SqliteRole {
    Writer,
    Reader,
}

/// SQLite through `Any` takes only a URL: the file is in the URL, and what the URL cannot say
/// (WAL, foreign keys, how long to wait for the write lock) is set on every new connection.
async fn connect_sqlite(path: &Path, role: SqliteRole) -> Result<AnyPool, sqlx::Error> {
    let url = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .to_url_lossy();
    let options = AnyConnectOptions::from_url(&url)?;
    let (connections, min) = match role {
        SqliteRole::Writer => (1, 1),
        SqliteRole::Reader => (3, 0),
    };
    AnyPoolOptions::new()
        .max_connections(connections)
        .min_connections(min)
        // A ping before each use, a round trip to the connection's thread, checks for a lost
        // server; an embedded database has none to lose.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                // WAL without an fsync per commit: an application crash loses nothing, a
                // power loss at most the last commits. The step log makes its signed
                // checkpoints durable itself (`State::add_checkpoint`), so no checkpoint ever
                // covers an entry a power loss could take (docs/step-log.md).
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                // Pages read through a mapping, not copied in by `read`: every commit on one
                // connection empties the others' page caches, and with steps reported
                // hundreds of times a second that re-reading was most of SQLite's CPU.
                conn.execute("PRAGMA mmap_size = 268435456").await?;
                if role == SqliteRole::Reader {
                    conn.execute("PRAGMA query_only = ON").await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_parsed_and_passwords_never_shown() {
        let pg: Database = "postgres://kiln:hunter2@db:5432/kiln".parse().unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert!(!pg.to_string().contains("hunter2"), "{pg}");
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<Database>(),
            Ok(Database::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<Database>(),
            Ok(Database::Sqlite("/tmp/x.db".into()))
        );
        assert!(matches!(
            "mysql://x".parse::<Database>(),
            Err(DatabaseUrlError::Scheme { .. })
        ));
        assert_eq!("sqlite:".parse::<Database>(), Err(DatabaseUrlError::NoPath));
    }

    /// sqlx records each migration's checksum in every database it migrated: a SQLite
    /// migration whose bytes change makes every existing `state.sqlite` refuse to open.
    #[test]
    fn sqlite_migrations_are_byte_identical_to_the_released_ones() {
        const RELEASED: [(i64, &str); 6] = [
            (
                1,
                "41c3aa01d6d993149f63a7fe2c562764f952b7a7818207706fe74c6226679ac4e9d4bc2b7998108f11fa9826b95c5b80",
            ),
            (
                2,
                "92f180bcc64c741de9225efcd360f343bf7997246aaee7af5863bc0bf576f94e23570e713a900ea208f443b2e2fa6544",
            ),
            (
                3,
                "fd1b4a824053a181bb948aaea781e873789e2558d5c48a19c100574dab448799283285b8ee5e7c6e9e1436a8fb1447d6",
            ),
            (
                4,
                "84868279e15397b5d31b64bfefb979fa10085fabdb1dbc5cf35f2cb8174250842cb58fbdc663dbf4b932144263b7e3e5",
            ),
            (
                5,
                "bf54d7fa714cd612d486873a9d5843198d83e80f29fe5f3a07c06643f6bce4e6ea7d3c3adda16b7d4ba3cefc84e9ac3d",
            ),
            (
                6,
                "c1468ac79079e4a361d153ec7be2fe574197c9daecbc44b8ce05a8fff5640a3ac840f668c851037095200cc0a9774e03",
            ),
        ];
        let ours: Vec<(i64, String)> = SQLITE_MIGRATIONS
            .iter()
            .map(|m| (m.version, hex::encode(&*m.checksum)))
            .collect();
        for (version, sum) in RELEASED {
            assert!(
                ours.contains(&(version, sum.to_owned())),
                "migration {version} changed: {ours:?}"
            );
        }
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions = |m: &Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS));
    }
}
