//! Hiding secrets in text that is shown or logged.

/// `scheme://user:***@host...` for `scheme://user:password@host...`; other text unchanged.
pub fn mask_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(super::mask_password("postgres://cs:hunter2@db:5432/cs"), "postgres://cs:***@db:5432/cs");
        assert_eq!(super::mask_password("smtp://relay:25"), "smtp://relay:25");
        assert_eq!(super::mask_password("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(super::mask_password("smtps://apikey@smtp.example.com"), "smtps://apikey@smtp.example.com");
    }
}
