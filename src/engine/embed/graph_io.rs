//! What inf_ir needs from an ONNX graph's inputs and outputs, decided from
//! their names, element types and shapes (read from the session, passed in
//! plain), so that an unusable graph is refused at load with the fix
//! rather than failing or pooling the wrong tensor at run time.

use super::padded_batch::PaddingSide;
use crate::engine::error::{EngineError, EngineResult};
use std::path::Path;

/// An output's element type, as far as pooling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputElement {
    /// float32, float16 or bfloat16: token states inf_ir can pool.
    Float,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputInfo {
    pub name: String,
    pub element: OutputElement,
    /// -1 where the graph leaves a dimension open.
    pub shape: Vec<i64>,
}

/// Which inputs to feed and which output holds the token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphPlan {
    pub token_types: bool,
    pub position_ids: bool,
    pub hidden_output: usize,
}

/// The names exporters give per-token states (transformers/optimum, and
/// sentence-transformers' own ONNX export).
const STATE_OUTPUTS: &[&str] = &["last_hidden_state", "token_embeddings"];

pub fn plan(
    file: &Path,
    inputs: &[String],
    outputs: &[OutputInfo],
    dimension: usize,
    padding_side: PaddingSide,
) -> EngineResult<GraphPlan> {
    let has = |name: &str| inputs.iter().any(|i| i == name);
    for needed in ["input_ids", "attention_mask"] {
        if !has(needed) {
            return Err(EngineError::files(format!(
                "{} has inputs {inputs:?}; inf_ir needs input_ids and attention_mask",
                file.display()
            ))
            .with_hint("export with optimum-cli export onnx --task feature-extraction, which gives both"));
        }
    }
    let position_ids = has("position_ids");
    if padding_side == PaddingSide::Left && !position_ids {
        // A graph that numbers positions itself would count the padding.
        return Err(EngineError::files(format!(
            "{} takes no position_ids, so with left padding its positions would start after the padding",
            file.display()
        ))
        .with_hint(
            "register it with padding_side => 'right', or export a graph with a position_ids input \
             (optimum-cli export onnx --task feature-extraction does for decoders)",
        ));
    }
    let by_name = STATE_OUTPUTS
        .iter()
        .find_map(|wanted| outputs.iter().position(|o| o.name == *wanted));
    let usable = |o: &OutputInfo| o.element == OutputElement::Float && o.shape.len() == 3;
    let hidden_output = match by_name {
        Some(i) if usable(&outputs[i]) => i,
        Some(_) | None => outputs.iter().position(|o| usable(o) && fits(o, dimension)).ok_or_else(|| {
            EngineError::files(format!(
                "{} has no output of token states [batch, tokens, {dimension}] in float32/16: its outputs are {}",
                file.display(),
                describe(outputs)
            ))
            .with_hint(
                "export the model without its head (optimum-cli export onnx --task feature-extraction; \
                 scripts/export_decoder_onnx.py for a GGUF): inf_ir pools last_hidden_state itself",
            )
        })?,
    };
    let states = &outputs[hidden_output];
    if !fits(states, dimension) {
        return Err(EngineError::files(format!(
            "{}'s output {} has {} values per token, but the folder's config says {dimension}",
            file.display(),
            states.name,
            states.shape[2]
        ))
        .with_hint("fix hidden_size in config.json (or word_embedding_dimension in 1_Pooling/config.json)"));
    }
    Ok(GraphPlan {
        token_types: has("token_type_ids"),
        position_ids,
        hidden_output,
    })
}

fn fits(output: &OutputInfo, dimension: usize) -> bool {
    matches!(output.shape.get(2), Some(&d) if d < 0 || d as usize == dimension)
}

fn describe(outputs: &[OutputInfo]) -> String {
    if outputs.is_empty() {
        return "none".into();
    }
    outputs
        .iter()
        .map(|o| {
            let dims: Vec<String> = o
                .shape
                .iter()
                .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                .collect();
            let kind = if o.element == OutputElement::Float { "" } else { " (not float)" };
            format!("{} [{}]{kind}", o.name, dims.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(name: &str, shape: &[i64]) -> OutputInfo {
        OutputInfo {
            name: name.into(),
            element: OutputElement::Float,
            shape: shape.to_vec(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const FILE: &str = "/m/model.onnx";

    #[test]
    fn encoder_and_decoder_inputs() {
        let outputs = [out("last_hidden_state", &[-1, -1, 384])];
        let bert = names(&["input_ids", "attention_mask", "token_type_ids"]);
        let p = plan(Path::new(FILE), &bert, &outputs, 384, PaddingSide::Right).unwrap();
        assert!(p.token_types && !p.position_ids);
        let llama = names(&["input_ids", "attention_mask", "position_ids"]);
        let p = plan(Path::new(FILE), &llama, &outputs, 384, PaddingSide::Left).unwrap();
        assert!(!p.token_types && p.position_ids);
    }

    #[test]
    fn left_padding_needs_position_ids() {
        let outputs = [out("last_hidden_state", &[-1, -1, 8])];
        let e = plan(Path::new(FILE), &names(&["input_ids", "attention_mask"]), &outputs, 8, PaddingSide::Left)
            .unwrap_err();
        assert!(e.message.contains("no position_ids") && e.message.contains(FILE));
        assert!(e.hint.unwrap().contains("padding_side => 'right'"));
    }

    #[test]
    fn states_by_name_then_by_shape() {
        let inputs = names(&["input_ids", "attention_mask"]);
        let outputs = [out("logits", &[-1, -1, 49152]), out("last_hidden_state", &[-1, -1, 576])];
        assert_eq!(plan(Path::new(FILE), &inputs, &outputs, 576, PaddingSide::Right).unwrap().hidden_output, 1);
        let outputs = [out("pooled", &[-1, 576]), out("hidden", &[-1, -1, 576])];
        assert_eq!(plan(Path::new(FILE), &inputs, &outputs, 576, PaddingSide::Right).unwrap().hidden_output, 1);
    }

    #[test]
    fn a_graph_with_only_logits_is_refused_with_its_outputs() {
        let inputs = names(&["input_ids", "attention_mask"]);
        let outputs = [out("logits", &[-1, -1, 49152])];
        let e = plan(Path::new(FILE), &inputs, &outputs, 576, PaddingSide::Right).unwrap_err();
        assert!(e.message.contains("logits [?, ?, 49152]"), "{}", e.message);
        assert!(e.hint.unwrap().contains("feature-extraction"));
        let ints = [OutputInfo {
            element: OutputElement::Other,
            ..out("last_hidden_state", &[-1, -1, 576])
        }];
        let e = plan(Path::new(FILE), &inputs, &ints, 576, PaddingSide::Right).unwrap_err();
        assert!(e.message.contains("(not float)"));
        assert!(plan(Path::new(FILE), &inputs, &[], 576, PaddingSide::Right)
            .unwrap_err()
            .message
            .contains("are none"));
    }

    #[test]
    fn a_dimension_that_disagrees_with_the_config_is_named() {
        let inputs = names(&["input_ids", "attention_mask"]);
        let outputs = [out("last_hidden_state", &[-1, -1, 1536])];
        let e = plan(Path::new(FILE), &inputs, &outputs, 576, PaddingSide::Right).unwrap_err();
        assert!(e.message.contains("1536 values per token") && e.message.contains("576"));
    }

    #[test]
    fn missing_ids_or_mask() {
        let outputs = [out("last_hidden_state", &[-1, -1, 8])];
        let e = plan(Path::new(FILE), &names(&["input_ids"]), &outputs, 8, PaddingSide::Right).unwrap_err();
        assert!(e.message.contains("attention_mask"));
    }
}
