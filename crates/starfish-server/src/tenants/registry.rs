//! The tenant registry's operations: create, read, list, update and delete the
//! records of runtime namespaces (the admin API's routes call them).

use super::{TenantError, TenantRecord, TenantState, Tenants};
use crate::config::NamespaceName;
use crate::config::names::SYSTEM_ROOT;
use crate::config::names::is_reserved_runtime_name;
use crate::store::StoreError;
use futures::StreamExt;
use std::sync::Arc;

impl Tenants {
    /// Creates tenant `name` from `template` (a conditional create: one winner).
    pub(crate) async fn create(
        &self,
        name: &str,
        template: &str,
        trusted_roots: Option<Vec<String>>,
    ) -> Result<TenantRecord, TenantError> {
        let valid = self
            .valid_name(name)
            .filter(|_| !is_reserved_runtime_name(name))
            .ok_or(TenantError::InvalidName)?;
        if self.static_names.contains(name) {
            return Err(TenantError::InConfig);
        }
        if !self.templates.contains_key(template) {
            return Err(TenantError::UnknownTemplate);
        }
        let record = TenantRecord {
            name: name.to_owned(),
            template: template.to_owned(),
            state: TenantState::Active,
            trusted_roots,
            created_at: self.clock.now_ms(),
            generation: super::new_generation()?,
            limits: None,
        };
        let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::InvalidName)?;
        self.registry
            .compare_and_swap(&crate::store::ObjectKey::named(&valid), |current| {
                if current.is_some() {
                    Err(TenantError::Exists)
                } else {
                    Ok((bytes.clone(), ()))
                }
            })
            .await?;
        // This node knows the tenant now: the writes that follow its creation are
        // served at once, not looked up as unknown names (which a burst of them
        // could take past the unknown-name budget: 404).
        self.known.insert(
            name.into(),
            super::Known {
                scope: self.scope(&valid, &record).map(Arc::new),
                at_ms: self.clock.now_ms(),
            },
        );
        Ok(record)
    }

    /// The record of `name`.
    pub(crate) async fn record(&self, name: &str) -> Result<TenantRecord, TenantError> {
        let valid = self.runtime_name(name)?;
        self.read(&valid).await?.ok_or(TenantError::Missing)
    }

    /// Moves tenant `name` to `to` (suspend or resume), by compare-and-swap.
    pub(crate) async fn set_state(
        &self,
        name: &str,
        to: TenantState,
    ) -> Result<TenantRecord, TenantError> {
        let valid = self.runtime_name(name)?;
        self.update(&valid, |record| {
            if record.state == TenantState::Deleting {
                return Err(TenantError::Missing);
            }
            record.state = to;
            Ok(())
        })
        .await
    }

    /// `name` when it may name a runtime tenant (not one of the config's).
    pub(crate) fn runtime_name(&self, name: &str) -> Result<NamespaceName, TenantError> {
        if self.static_names.contains(name) {
            return Err(TenantError::InConfig);
        }
        self.valid_name(name).ok_or(TenantError::Missing)
    }

    /// Changes the record of `name` with `change`, by compare-and-swap; this node
    /// forgets what it knew of it.
    pub(crate) async fn update(
        &self,
        name: &NamespaceName,
        change: impl Fn(&mut TenantRecord) -> Result<(), TenantError>,
    ) -> Result<TenantRecord, TenantError> {
        let record = self
            .registry
            .compare_and_swap(&crate::store::ObjectKey::named(name), |current| {
                let mut record: TenantRecord = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or(TenantError::Missing)?;
                change(&mut record)?;
                let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
                Ok::<_, TenantError>((bytes, record))
            })
            .await?;
        self.forget(name.as_str());
        Ok(record)
    }

    /// Deletes tenant `name`: marks it deleting (404 from then on), removes its
    /// generation's data, then its record if it is still that generation. An
    /// interrupted deletion is finished by the next one.
    pub(crate) async fn delete(&self, name: &str) -> Result<u64, TenantError> {
        let valid = self.runtime_name(name)?;
        let key = crate::store::ObjectKey::named(&valid);
        let record = self
            .update(&valid, |record| {
                record.state = TenantState::Deleting;
                Ok(())
            })
            .await?;
        // Never drop the record of data that could not be reached: it would be left
        // behind, unlisted.
        let template = self
            .templates
            .get(&record.template)
            .ok_or(TenantError::StoreUnopenable)?;
        let store = self.store_of(&valid, &record.generation, template)?;
        let deleted = store.clear().await?;
        // Its quota's record goes with it (a re-creation starts from nothing anyway).
        if let Some(ledger) = store.quota() {
            let (records, key) = ledger.record_key();
            records.remove(key).await?;
        }
        // So do its data keys: whatever copy of its sealed objects is left anywhere
        // (a backup) can no longer be opened.
        if let Some(ring) = self.keyring_of(&valid, &record.generation, template) {
            ring.forget().await?;
        }
        // A concurrent deletion may have finished and the name been created again:
        // only this generation's record is removed.
        if self
            .read(&valid)
            .await?
            .is_some_and(|current| current.generation == record.generation)
        {
            self.registry.remove(&key).await?;
        }
        self.forget(name);
        Ok(deleted)
    }

    /// One page of tenant records, by name, after `after`.
    pub(crate) async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TenantRecord>, bool), TenantError> {
        let root = object_store::path::Path::from_iter([SYSTEM_ROOT, super::REGISTRY_AREA]);
        let mut listing = self.root.inner().list(Some(&root));
        let mut names = std::collections::BTreeSet::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(StoreError::from)?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if after.is_some_and(|a| name <= a) || self.valid_name(name).is_none() {
                continue;
            }
            names.insert(name.to_owned());
            if names.len() > limit + 1 {
                names.pop_last();
            }
        }
        let has_more = names.len() > limit;
        let mut out = Vec::new();
        for name in names.into_iter().take(limit) {
            if let Ok(record) = self.record(&name).await {
                out.push(record);
            }
        }
        Ok((out, has_more))
    }

    /// The objects and bytes tenant `record` holds; `None` when its store cannot
    /// be opened.
    pub(crate) async fn usage(
        &self,
        record: &TenantRecord,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(name) = self.valid_name(&record.name) else {
            return Ok(None);
        };
        match self
            .templates
            .get(&record.template)
            .map(|t| self.store_of(&name, &record.generation, t))
        {
            Some(Ok(store)) => store.usage().await.map(Some),
            _ => Ok(None),
        }
    }

    /// How many collections `template` has.
    pub(crate) fn collections_of(&self, template: &str) -> usize {
        self.templates
            .get(template)
            .map_or(0, |t| t.collections.len())
    }
}
