//! Prompt templates: `{{name}}` slots filled from named values.
//!
//! Double braces because prompts show JSON examples, whose single braces
//! must stay as they are. A slot with no value is an error (a typo in a
//! stored template should not reach a paid endpoint as literal text).

use std::collections::HashMap;

/// Fill every `{{name}}` of `template` (spaces inside the braces allowed).
pub fn render(template: &str, values: &HashMap<&str, &str>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a \"{{\" has no closing \"}}\"".into());
        };
        let name = after[..end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => {
                let mut known: Vec<&str> = values.keys().copied().collect();
                known.sort_unstable();
                return Err(format!(
                    "the template names {{{{{name}}}}}, which is not one of {}",
                    known.join(", ")
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The slots a template uses, in order of first use.
pub fn slots(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &after[end + 2..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> HashMap<&'static str, &'static str> {
        HashMap::from([("query", "cat food"), ("passage", "Cats need taurine.")])
    }

    #[test]
    fn fills_slots_and_leaves_json_alone() {
        let t = "Query: {{query}}\nPassage: {{ passage }}\nReply {\"instruction\": \"...\"}";
        assert_eq!(
            render(t, &values()).unwrap(),
            "Query: cat food\nPassage: Cats need taurine.\nReply {\"instruction\": \"...\"}"
        );
        assert_eq!(slots(t), vec!["query", "passage"]);
    }

    #[test]
    fn unknown_or_unclosed_slots_are_errors() {
        let e = render("{{querry}}", &values()).unwrap_err();
        assert_eq!(e, "the template names {{querry}}, which is not one of passage, query");
        assert!(render("{{query", &values()).is_err());
    }

    #[test]
    fn values_are_not_rendered_again() {
        let v = HashMap::from([("query", "{{passage}}"), ("passage", "p")]);
        assert_eq!(render("{{query}} {{passage}}", &v).unwrap(), "{{passage}} p");
    }
}
