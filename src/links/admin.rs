//! Managing organizations, projects and their API tokens: what the CLI (`dialbridge org`,
//! `project`, `token`) and the configuration's `[[organizations]]` and `[[projects]]` do.

use crate::auth;
use crate::config::{Config, Name, OrganizationConfig, ProjectConfig};
use crate::money::Money;
use crate::room::unix_now;
use crate::store::links::{OrgChange, OrgRow, ProjectChange, ProjectRow};
use crate::store::{Store, StoreError, Tx};

/// Why a management command failed; the message is for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type AdminResult<T> = Result<T, AdminError>;

fn refused<T>(message: String) -> AdminResult<T> {
    Err(AdminError::Refused(message))
}

fn org_named(tx: &Tx, name: &str) -> AdminResult<OrgRow> {
    match tx.org_by_name(name)? {
        Some(org) => Ok(org),
        None => refused(format!("no organization `{name}`")),
    }
}

fn project_named(tx: &Tx, name: &str) -> AdminResult<ProjectRow> {
    match tx.project_by_name(name)? {
        Some(p) => Ok(p),
        None => refused(format!("no project `{name}`")),
    }
}

pub fn add_org(store: &Store, name: &Name, change: &OrgChange) -> AdminResult<OrgRow> {
    store.write(|tx| {
        if tx.org_by_name(&name.0)?.is_some() {
            return refused(format!("organization `{}` already exists", name.0));
        }
        let id = tx.insert_org(&name.0, change, unix_now())?;
        tx.org(id)?
            .ok_or_else(|| AdminError::Refused("the new organization vanished".into()))
    })
}

pub fn set_org(store: &Store, name: &str, change: &OrgChange) -> AdminResult<OrgRow> {
    store.write(|tx| {
        let org = org_named(tx, name)?;
        tx.update_org(org.id, change)?;
        Ok(tx.org(org.id)?.unwrap_or(org))
    })
}

/// Removes an organization; its projects stay and can no longer create links.
pub fn remove_org(store: &Store, name: &str) -> AdminResult<()> {
    store.write(|tx| {
        let org = org_named(tx, name)?;
        tx.delete_org(org.id)?;
        Ok(())
    })
}

pub fn orgs(store: &Store) -> AdminResult<Vec<OrgRow>> {
    Ok(store.write(|tx| tx.orgs())?)
}

pub fn add_project(
    store: &Store,
    config: &Config,
    name: &Name,
    org: &str,
    change: &ProjectChange,
) -> AdminResult<ProjectRow> {
    store.write(|tx| {
        if tx.project_by_name(&name.0)?.is_some() {
            return refused(format!("project `{}` already exists", name.0));
        }
        let org = org_named(tx, org)?;
        let id = tx.insert_project(
            &name.0,
            org.id,
            config.links.link_lifetime.0.as_secs() as i64,
            config.links.empty_timeout.0.as_secs() as i64,
            unix_now(),
        )?;
        tx.update_project(id, change)?;
        project_named(tx, &name.0)
    })
}

/// Changes a project's settings; `org` moves it to another organization.
pub fn set_project(
    store: &Store,
    name: &str,
    org: Option<&str>,
    change: &ProjectChange,
) -> AdminResult<ProjectRow> {
    store.write(|tx| {
        let project = project_named(tx, name)?;
        let mut change = change.clone();
        if let Some(org) = org {
            change.organization_id = Some(org_named(tx, org)?.id);
        }
        if change.webhook_url.as_ref().is_some_and(Option::is_some)
            && project.webhook_secret.is_none()
            && !change.webhook_secret.as_ref().is_some_and(Option::is_some)
        {
            return refused(
                "a webhook needs a secret to sign its deliveries: add --webhook-secret".into(),
            );
        }
        tx.update_project(project.id, &change)?;
        project_named(tx, name)
    })
}

pub fn projects(store: &Store) -> AdminResult<Vec<(ProjectRow, Option<String>)>> {
    Ok(store.write(|tx| {
        tx.projects()?
            .into_iter()
            .map(|p| {
                let org = match p.organization_id {
                    Some(id) => tx.org(id)?.map(|o| o.name),
                    None => None,
                };
                Ok((p, org))
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })?)
}

/// Makes a new API token for the project; returns it (only its hash is stored).
pub fn add_token(store: &Store, project: &str) -> AdminResult<String> {
    let token = auth::new_token();
    store.write(|tx| {
        let project = project_named(tx, project)?;
        tx.insert_project_token(project.id, &auth::hash_token(&token), unix_now())?;
        Ok::<_, AdminError>(())
    })?;
    Ok(token)
}

fn org_change(o: &OrganizationConfig) -> OrgChange {
    OrgChange {
        subscribed: Some(o.subscribed),
        price_micros: Some(o.price_per_minute.micros()),
        spend_limit_micros: Some(o.spend_limit.map(Money::micros)),
        one_to_one: Some(o.one_to_one),
        recording: Some(o.recording),
        dialout: Some(o.dialout),
    }
}

fn project_change(p: &ProjectConfig, config: &Config, org_id: i64) -> ProjectChange {
    let secs = |s: Option<crate::config::Seconds>, default: crate::config::Seconds| {
        s.unwrap_or(default).0.as_secs() as i64
    };
    ProjectChange {
        organization_id: Some(org_id),
        enable_recording: Some(p.enable_recording),
        webhook_url: Some(p.webhook_url.as_ref().map(|u| u.0.clone())),
        webhook_secret: Some(p.webhook_secret.clone()),
        link_lifetime: Some(secs(p.link_lifetime, config.links.link_lifetime)),
        empty_timeout: Some(secs(p.empty_timeout, config.links.empty_timeout)),
    }
}

/// Creates or updates what the configuration declares, as `[[users]]` are.
pub fn apply_config(store: &Store, config: &Config) -> AdminResult<()> {
    store.write(|tx| {
        for o in &config.organizations {
            let change = org_change(o);
            match tx.org_by_name(&o.name.0)? {
                Some(org) => tx.update_org(org.id, &change)?,
                None => {
                    tx.insert_org(&o.name.0, &change, unix_now())?;
                }
            }
        }
        for p in &config.projects {
            let org = org_named(tx, &p.organization.0)?;
            let change = project_change(p, config, org.id);
            let id = match tx.project_by_name(&p.name.0)? {
                Some(project) => project.id,
                None => tx.insert_project(&p.name.0, org.id, 0, 0, unix_now())?,
            };
            tx.update_project(id, &change)?;
            for token in &p.tokens {
                tx.insert_project_token(id, &auth::hash_token(&token.0), unix_now())?;
            }
        }
        Ok(())
    })
}
