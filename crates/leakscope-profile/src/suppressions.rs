//! Suppressions for the leak summary at exit: blocks the C library (or the
//! user) knows about, counted apart as "suppressed" instead of in their
//! category, as Valgrind's and heaptrack's suppression files do. The rules
//! are plain text (`NAME: FRAME`, see `suppressions.txt`, the built-in
//! list, which says why each rule is there).

/// The built-in rules (glibc's own blocks).
pub const BUILT_IN: &str = include_str!("suppressions.txt");

/// One rule: a name and the frame it looks for in an allocation stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub name: String,
    /// A function name; a trailing `*` matches any name it starts.
    pub frame: String,
}

impl Suppression {
    /// Whether an allocation stack (function names, leaf first) matches.
    /// glibc's internal aliases (`__GI__IO_file_doallocate`, the name its
    /// symbol table gives) match the public name.
    pub fn matches(&self, stack: &[String]) -> bool {
        let names = stack
            .iter()
            .flat_map(|f| [f.as_str(), f.strip_prefix("__GI_").unwrap_or(f)]);
        match self.frame.strip_suffix('*') {
            Some(prefix) => names.into_iter().any(|f| f.starts_with(prefix)),
            None => names.into_iter().any(|f| f == self.frame),
        }
    }
}

/// Reads rules from text: `NAME: FRAME` per line; `#` starts a comment;
/// blank lines are skipped. `origin` names the text in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Suppression>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, frame)) = line.split_once(':') else {
            return Err(format!(
                "{origin}:{}: expected `NAME: FRAME`, found {line:?}",
                n + 1
            ));
        };
        let (name, frame) = (name.trim(), frame.trim());
        if name.is_empty() || frame.is_empty() || frame.contains(char::is_whitespace) {
            return Err(format!(
                "{origin}:{}: expected `NAME: FRAME` (one frame), found {line:?}",
                n + 1
            ));
        }
        rules.push(Suppression {
            name: name.to_string(),
            frame: frame.to_string(),
        });
    }
    Ok(rules)
}

/// The built-in rules.
pub fn built_in() -> Vec<Suppression> {
    parse(BUILT_IN, "built-in suppressions").expect("the built-in list parses")
}

/// The first rule matching a stack, if any.
pub fn first_match<'a>(rules: &'a [Suppression], stack: &[String]) -> Option<&'a Suppression> {
    rules.iter().find(|r| r.matches(stack))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn the_built_in_list_parses_and_names_glibcs_blocks() {
        let rules = built_in();
        let dtv = stack(&["allocate_dtv", "__GI__dl_allocate_tls", "allocate_stack"]);
        assert_eq!(first_match(&rules, &dtv).unwrap().name, "glibc-thread-dtv");
        assert!(first_match(&rules, &stack(&["make_config", "main"])).is_none());
        let stdio = stack(&["__GI__IO_file_doallocate", "__GI__IO_doallocbuf"]);
        assert_eq!(
            first_match(&rules, &stdio).unwrap().name,
            "glibc-stdio-buffer"
        );
    }

    #[test]
    fn frames_match_exactly_or_by_prefix() {
        let rules = parse("a: exact\nb: pre*  # comment\n\n# only a comment\n", "t").unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules[0].matches(&stack(&["x", "exact"])));
        assert!(!rules[0].matches(&stack(&["exactly"])));
        assert!(rules[1].matches(&stack(&["prefix_of_it"])));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse("ok: f\nno colon here\n", "mine.supp").unwrap_err();
        assert!(e.starts_with("mine.supp:2:"), "{e}");
        assert!(parse("x: two frames\n", "t").is_err());
        assert!(parse(": f\n", "t").is_err());
    }
}
