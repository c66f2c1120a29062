//! Why a setting cannot be used: one line naming the line, the key and the nearest valid name,
//! never quoting the config's text. Its own module, below the config and the broker settings
//! it holds, so that both can say it without importing each other.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Invalid {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Invalid {
        Invalid(s.into())
    }
}

/// Why a regular expression does not compile, in one line: the regex crate's own message spans
/// several (the pattern, a caret under the fault, then the reason), and an error of mqwatch's is
/// one line that quotes the pattern itself.
pub fn regex_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or("not a regular expression")
            .to_string(),
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than the {limit} bytes allowed")
        }
        _ => e.to_string().lines().next().unwrap_or("").to_string(),
    }
}

/// Checks that every pattern of a setting compiles; the error names the setting and the index,
/// never the pattern (a config error never quotes a value).
pub fn check_patterns(setting: &str, patterns: &[String]) -> Result<(), Invalid> {
    for (i, p) in patterns.iter().enumerate() {
        regex::Regex::new(p).map_err(|e| {
            Invalid(format!(
                "{setting}[{i}] is not a regular expression: {}",
                regex_reason(&e)
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_regex_error_is_one_line_with_its_reason() {
        // Built at run time, as a pattern from a config is.
        let pattern = ["^pay", "(ments"].concat();
        let e = regex::Regex::new(&pattern).unwrap_err();
        assert!(
            e.to_string().contains('\n'),
            "the crate's own message spans lines"
        );
        assert_eq!(super::regex_reason(&e), "unclosed group");
        let bad = super::check_patterns("kafka.include_topics", &[".*".into(), pattern]);
        assert_eq!(
            bad.unwrap_err().0,
            "kafka.include_topics[1] is not a regular expression: unclosed group"
        );
    }
}
