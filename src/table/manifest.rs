//! The manifest: the table's commit log, kept in the table's own storage.
//!
//! ```text
//! <table>/_sluice/log/00000000000000000001.json   entry 1 (one atomic create-only put each)
//! <table>/_sluice/log/00000000000000000002.json   ...
//! <table>/_sluice/checkpoints/00000000000000000100.json   the whole state after entry 100
//! <table>/_sluice/_last_checkpoint                         hint: the newest checkpoint's seq
//! ```
//!
//! Entry `n + 1` can only be written by a writer that has read entry `n`, so the log has no
//! gaps; the state is the newest checkpoint plus the entries after it, read until the first
//! missing sequence number. This module reads and writes those objects; what a put that finds
//! its sequence number taken means is decided in one place, [`crate::table::commit`].

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::error::ManifestError;
use crate::table::entry::{Entry, FORMAT_VERSION};
use crate::table::state::TableState;
use crate::table::store::{Created, TableStore};

pub const CHECKPOINT_DIR: &str = "_sluice/checkpoints";
pub const LAST_CHECKPOINT: &str = "_sluice/_last_checkpoint";

fn checkpoint_rel(seq: u64) -> String {
    format!("{CHECKPOINT_DIR}/{seq:020}.json")
}

#[derive(Serialize, Deserialize)]
struct LastCheckpoint {
    seq: u64,
}

/// Access to a table's manifest in its object store.
#[derive(Clone, Debug)]
pub struct Manifest {
    store: TableStore,
    checkpoint_every: u64,
}

impl Manifest {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, checkpoint_every: u64) -> Self {
        Self::on(TableStore::new(store, root), checkpoint_every)
    }

    /// The manifest of the table in `store`; a checkpoint every `checkpoint_every` entries.
    pub fn on(store: TableStore, checkpoint_every: u64) -> Self {
        Self {
            store,
            checkpoint_every: checkpoint_every.max(1),
        }
    }

    /// The table's storage.
    pub fn store(&self) -> &TableStore {
        &self.store
    }

    /// The absolute store path of a path relative to the table root.
    pub fn path(&self, rel: &str) -> Path {
        self.store.path(rel)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        rel: &str,
    ) -> Result<Option<T>, ManifestError> {
        let Some(bytes) = self.store.get(rel).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ManifestError::Corrupt {
                path: self.path(rel).to_string(),
                message: e.to_string(),
            })
    }

    fn to_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<Bytes, ManifestError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|source| ManifestError::Serialize {
                path: self.path(rel).to_string(),
                source,
            })
    }

    pub async fn read_entry(&self, seq: u64) -> Result<Option<Entry>, ManifestError> {
        self.get_json(&Entry::rel(seq)).await
    }

    /// The current state: the newest checkpoint, then every entry after it.
    pub async fn load(&self) -> Result<TableState, ManifestError> {
        let mut state = self.latest_checkpoint().await?.unwrap_or_default();
        state.reindex();
        state.loaded_from_checkpoint = (state.seq > 0).then_some(state.seq);
        self.refresh(&mut state).await?;
        Ok(state)
    }

    /// Reads the checkpoint written after entry `seq`, if there is one.
    pub async fn read_checkpoint(&self, seq: u64) -> Result<Option<TableState>, ManifestError> {
        let mut s: Option<TableState> = self.get_json(&checkpoint_rel(seq)).await?;
        if let Some(s) = s.as_mut() {
            s.reindex();
        }
        Ok(s)
    }

    /// The sequence numbers of every checkpoint, ascending.
    pub async fn list_checkpoints(&self) -> Result<Vec<u64>, ManifestError> {
        let metas = self.store.list(CHECKPOINT_DIR).await?;
        let mut seqs: Vec<u64> = metas
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn latest_checkpoint(&self) -> Result<Option<TableState>, ManifestError> {
        if let Some(hint) = self.get_json::<LastCheckpoint>(LAST_CHECKPOINT).await? {
            if let Some(s) = self
                .get_json::<TableState>(&checkpoint_rel(hint.seq))
                .await?
            {
                return Ok(Some(s));
            }
        }
        // No usable hint: list the checkpoints and take the newest.
        match self.list_checkpoints().await?.last() {
            Some(&seq) => self.get_json(&checkpoint_rel(seq)).await,
            None => Ok(None),
        }
    }

    /// Applies every entry after `state.seq`, up to the newest; returns the `(seq, commit_id)`
    /// of each entry applied.
    pub async fn refresh(
        &self,
        state: &mut TableState,
    ) -> Result<Vec<(u64, String)>, ManifestError> {
        let mut applied = Vec::new();
        while let Some(e) = self.read_entry(state.seq + 1).await? {
            state.apply(&e)?;
            applied.push((e.seq, e.commit_id));
        }
        Ok(applied)
    }

    /// Puts `entry` at its sequence number unless an entry is there: the conditional put that
    /// publishes a commit. Whose entry "already there" is, is for the caller to find out.
    pub async fn put_entry(&self, entry: &Entry) -> Result<Created, ManifestError> {
        let rel = Entry::rel(entry.seq);
        let body = self.to_json(&rel, entry)?;
        Ok(self.store.put_new(&rel, body).await?)
    }

    /// Writes a checkpoint of `state` when its sequence number is due for one. Advisory: a
    /// failed checkpoint only makes the next load read more entries.
    pub async fn checkpoint_if_due(&self, state: &TableState) {
        if state.seq > 0 && state.seq.is_multiple_of(self.checkpoint_every) {
            if let Err(e) = self.write_checkpoint(state).await {
                tracing::warn!(error = %e, seq = state.seq, "could not write checkpoint");
            }
        }
    }

    pub async fn write_checkpoint(&self, state: &TableState) -> Result<(), ManifestError> {
        let rel = checkpoint_rel(state.seq);
        let mut state = state.clone();
        state.format = FORMAT_VERSION;
        let body = self.to_json(&rel, &state)?;
        // The same seq always has the same state: another writer's copy is as good.
        self.store.put_new(&rel, body).await?;
        let hint = self.to_json(LAST_CHECKPOINT, &LastCheckpoint { seq: state.seq })?;
        self.store.put(LAST_CHECKPOINT, hint).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::entry::test_entry as entry;
    use object_store::memory::InMemory;

    /// Appends without any check (the committer checks): the log alone.
    async fn append(m: &Manifest, s: &mut TableState, mut e: Entry) -> Created {
        e.seq = s.seq + 1;
        let created = m.put_entry(&e).await.unwrap();
        if created == Created::New {
            s.apply(&e).unwrap();
            m.checkpoint_if_due(s).await;
        }
        created
    }

    #[tokio::test]
    async fn commits_then_reloads_through_checkpoints() {
        let m = Manifest::new(Arc::new(InMemory::new()), Path::from("tables/t"), 3);
        let mut s = m.load().await.unwrap();
        assert_eq!(s.seq, 0);
        for i in 0..10 {
            append(&m, &mut s, entry(&[("a", 0, i * 10, i * 10 + 10)])).await;
        }
        assert_eq!(s.seq, 10);
        assert_eq!(s.partition("a", 0).unwrap().ranges, vec![(0, 100)]);
        let again = m.load().await.unwrap();
        assert_eq!(again.seq, 10);
        assert_eq!(again.loaded_from_checkpoint, Some(9));
        assert_eq!(again.partition("a", 0).unwrap().ranges, vec![(0, 100)]);
        // The checkpoint at 9 was used: removing entries up to 9 changes nothing.
        for seq in 1..=9 {
            m.store().delete(&Entry::rel(seq)).await.unwrap();
        }
        assert_eq!(
            m.load().await.unwrap().partition("a", 0).unwrap().ranges,
            vec![(0, 100)]
        );
        // A second put of a taken sequence number is reported, never overwrites.
        let mut stale = m.read_checkpoint(9).await.unwrap().unwrap();
        assert_eq!(
            append(&m, &mut stale, entry(&[("a", 0, 90, 95)])).await,
            Created::AlreadyThere { after_retry: false }
        );
        assert_eq!(
            m.load().await.unwrap().partition("a", 0).unwrap().ranges,
            vec![(0, 100)]
        );
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_an_error_naming_it() {
        let m = Manifest::new(Arc::new(InMemory::new()), Path::from("t"), 3);
        m.store()
            .put_new(&Entry::rel(1), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let err = m.load().await.unwrap_err();
        assert!(
            matches!(err, ManifestError::Corrupt { ref path, .. } if path.ends_with("00000000000000000001.json")),
            "{err}"
        );
    }
}
