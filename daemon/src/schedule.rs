//! Scheduling one run: hand each step to an executor as soon as every step it needs has
//! succeeded, at most `jobs` at a time; skip the dependents of a failed step.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kiln_core::{InputSource, StagedInput, StepRecord, StepSpec};
use kiln_pipelines::Step;
use tokio::task::JoinSet;

use crate::run::AcceptedRun;
use crate::state::{State, StateError, StepState};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Something that runs a step and reports its record: the local worker in the all-in-one mode.
pub trait StepExecutor: Send + Sync + 'static {
    /// Runs `spec`. A step that fails or cannot be run still yields a record.
    fn execute(&self, spec: StepSpec) -> BoxFuture<StepRecord>;
}

/// Progress of a run, for whoever shows it.
#[derive(Debug)]
pub enum RunEvent<'a> {
    StepStarted { step: &'a str },
    StepFinished { record: &'a StepRecord },
    StepSkipped { step: &'a str, because: &'a str },
}

/// Why a step's spec could not be built: something it needs is not at hand.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the pipeline has no step {step}")]
    UnknownStep { step: String },
    #[error("step {step}: input {input} was not resolved when the run was accepted")]
    UnresolvedInput { step: String, input: String },
    #[error("step {step}: needs {need}, which has no record")]
    MissingRecord { step: String, need: String },
}

/// The step's `names` (inputs or sources) as resolved at acceptance, each mounted under its name.
fn staged<T: Clone>(
    step: &Step,
    names: &[String],
    resolved: &BTreeMap<String, T>,
    source: impl Fn(T) -> InputSource,
) -> Result<Vec<StagedInput>, SpecError> {
    names
        .iter()
        .map(|name| {
            let found = resolved
                .get(name)
                .ok_or_else(|| SpecError::UnresolvedInput {
                    step: step.name().to_owned(),
                    input: name.clone(),
                })?;
            Ok(StagedInput {
                mount_name: name.clone(),
                source: source(found.clone()),
            })
        })
        .collect()
}

/// The spec of `step`, given the records of the steps it needs. Both the all-in-one mode
/// ([`drive`]) and the daemon's leases build specs here.
pub fn step_spec(
    run: &AcceptedRun,
    step: &Step,
    records: &BTreeMap<String, StepRecord>,
) -> Result<StepSpec, SpecError> {
    let mirror_inputs = staged(step, step.inputs(), &run.inputs, InputSource::Mirror)?;
    let source_inputs = staged(step, step.sources(), &run.sources, InputSource::Git)?;
    let step_inputs = step
        .needs()
        .iter()
        .map(|name| {
            let record = records.get(name).ok_or_else(|| SpecError::MissingRecord {
                step: step.name().to_owned(),
                need: name.clone(),
            })?;
            Ok(StagedInput {
                mount_name: name.clone(),
                source: InputSource::Step {
                    step: name.clone(),
                    outputs: record.outputs.clone(),
                },
            })
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    Ok(StepSpec {
        run_id: run.id.clone(),
        step: step.name().to_owned(),
        command: step.run().to_owned(),
        env: step.env().clone(),
        rootfs: run.rootfs.clone(),
        inputs: mirror_inputs
            .into_iter()
            .chain(source_inputs)
            .chain(step_inputs)
            .collect(),
        outputs: step.outputs().to_vec(),
        timeout_secs: step.timeout().as_secs().max(1),
        source_date_epoch: run.pipeline.source_date_epoch(),
        resources: step.resources(),
    })
}

/// Runs every step of `run` and returns the records of the steps that ran.
pub async fn drive(
    state: &State,
    run: &AcceptedRun,
    executor: Arc<dyn StepExecutor>,
    jobs: usize,
    on_event: &(dyn Fn(RunEvent<'_>) + Sync),
) -> Result<BTreeMap<String, StepRecord>, StateError> {
    let mut records: BTreeMap<String, StepRecord> = BTreeMap::new();
    let mut waiting: Vec<&Step> = run.pipeline.steps().iter().collect();
    let mut not_ok: BTreeSet<String> = BTreeSet::new();
    let mut running = JoinSet::new();
    loop {
        let mut still_waiting = Vec::new();
        for step in waiting {
            if let Some(blocker) = step.needs().iter().find(|n| not_ok.contains(*n)) {
                let because = format!("needs {blocker}, which did not succeed");
                state
                    .set_step_state(&run.id, step.name(), StepState::Skipped)
                    .await?;
                on_event(RunEvent::StepSkipped {
                    step: step.name(),
                    because: &because,
                });
                not_ok.insert(step.name().to_owned());
            } else if running.len() < jobs && step.needs().iter().all(|n| records.contains_key(n)) {
                let spec = step_spec(run, step, &records)
                    .expect("accept resolved every input and only succeeded needs are waited on");
                state
                    .set_step_state(&run.id, step.name(), StepState::Running)
                    .await?;
                on_event(RunEvent::StepStarted { step: step.name() });
                running.spawn(executor.execute(spec));
            } else {
                still_waiting.push(step);
            }
        }
        waiting = still_waiting;
        let Some(done) = running.join_next().await else {
            break;
        };
        let record = done.expect("step executors do not panic");
        state.record_step(&record).await?;
        on_event(RunEvent::StepFinished { record: &record });
        if !record.exit.success() {
            not_ok.insert(record.step.clone());
        }
        records.insert(record.step.clone(), record);
    }
    // Records of failed steps are kept for the caller; only successful ones feed dependents.
    Ok(records)
}
