//! The one RocksDB instance of a data directory. Its tenants — the hash lists (`store`) and
//! the reports (`reports`) — each declare their own column families here, and share one WAL,
//! one lock and one directory to back up; each reaches only its own families, through
//! [`Db::cf`].

use std::path::Path;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options};

use crate::datadir::DataDir;
use crate::store::StoreError;

/// How a column family's files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed: small data, and a byte scan of the data directory (the privacy tests)
    /// sees exactly what is stored and what a purge removed.
    None,
    /// Fresh data (L0, L1) uncompressed, so flushes during a bulk import cost no compression;
    /// compactions into the deeper levels, where most data lives, use LZ4.
    Tiered,
}

/// One column family a tenant keeps.
#[derive(Debug, Clone, Copy)]
pub struct ColumnFamilySpec {
    pub name: &'static str,
    pub compression: Compression,
}

/// Every tenant's column families. A tenant added here is opened with the rest.
pub fn column_families() -> impl Iterator<Item = &'static ColumnFamilySpec> {
    crate::store::COLUMN_FAMILIES
        .iter()
        .chain(crate::reports::COLUMN_FAMILIES.iter())
}

/// Tuning knobs of the embedded RocksDB.
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    /// Memtable size per column family (RocksDB's default, 64 MiB, when `None`). Smaller
    /// means less memory and more, smaller flushes during large imports.
    pub write_buffer_bytes: Option<usize>,
}

/// The open database of a data directory.
pub struct Db {
    db: DB,
    dir: DataDir,
}

impl std::ops::Deref for Db {
    type Target = DB;
    fn deref(&self) -> &DB {
        &self.db
    }
}

impl Db {
    /// Open (or create) the database in `dir` with every tenant's column families.
    pub fn open(dir: &Path, tuning: &DbOptions) -> Result<Db, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_keep_log_file_num(4);
        // Bulk chunks of a list change are written without the WAL and flushed before the
        // commit (see `store::Change::flush`): flushing all column families together keeps a
        // chunk's entries and its change-log record in step, so recovery can always roll back
        // what it finds.
        opts.set_atomic_flush(true);
        let cfs = column_families().map(|spec| {
            let mut o = Options::default();
            let (none, lz4) = (DBCompressionType::None, DBCompressionType::Lz4);
            match spec.compression {
                Compression::None => o.set_compression_type(none),
                Compression::Tiered => {
                    o.set_compression_type(lz4);
                    o.set_compression_per_level(&[none, none, lz4, lz4, lz4, lz4, lz4]);
                }
            }
            if let Some(b) = tuning.write_buffer_bytes {
                o.set_write_buffer_size(b.max(1 << 20));
            }
            ColumnFamilyDescriptor::new(spec.name, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Db {
            db,
            dir: DataDir::new(dir),
        })
    }

    /// Open read-only, as it is: no recovery, no writes (a backup being checked).
    pub fn open_read_only(dir: &Path) -> Result<Db, StoreError> {
        let names = column_families().map(|s| s.name);
        let db = DB::open_cf_for_read_only(&Options::default(), dir, names, false)?;
        Ok(Db {
            db,
            dir: DataDir::new(dir),
        })
    }

    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// A column family by name; a missing one means the directory is not Baken's, or damaged.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
    }
}
