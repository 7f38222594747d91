//! Hiding secrets in text that is shown or logged.

/// `scheme://user:***@host...` for `scheme://user:password@host...`, and `password=***` (or
/// `sslpassword=***`) for such parameters of the query; other text unchanged.
pub fn mask_password(url: &str) -> String {
    let masked = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    };
    let Some((base, query)) = masked.split_once('?') else { return masked };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => format!("{name}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(super::mask_password("postgres://cs:hunter2@db:5432/cs"), "postgres://cs:***@db:5432/cs");
        assert_eq!(super::mask_password("smtp://relay:25"), "smtp://relay:25");
        assert_eq!(super::mask_password("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(super::mask_password("smtps://apikey@smtp.example.com"), "smtps://apikey@smtp.example.com");
        assert_eq!(
            super::mask_password("postgres://db/cs?user=cs&password=hunter2&sslmode=require"),
            "postgres://db/cs?user=cs&password=***&sslmode=require"
        );
        assert_eq!(
            super::mask_password("postgres://u:p@db/cs?sslpassword=x"),
            "postgres://u:***@db/cs?sslpassword=***"
        );
        assert_eq!(super::mask_password("smtp://relay:25?tls=required"), "smtp://relay:25?tls=required");
    }
}
