use dialbridge_sip::auth::{
    select_challenge, Algorithm, AuthError, AuthHeader, Authorization, Challenge, ChallengeKind,
    DigestClient, DigestRequest, GiveUp, Qop, RetryDecision,
};
use proptest::prelude::*;

const SIP_URI: &str = "sip:+15551234567@trunk.example.com:5060;transport=tcp";

fn sip_challenge(alg: &str) -> String {
    format!(r#"Digest realm="sip.example.net", nonce="4f8d2a1c9b7e", algorithm={alg}, qop="auth""#)
}

#[test]
fn rfc2617_section_3_5_example() {
    let c = Challenge::parse(
        r#"Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    assert_eq!(c.realm, "testrealm@host.com");
    assert_eq!(c.qop, vec![Qop::Auth, Qop::AuthInt]);
    assert_eq!(c.algorithm, Algorithm::Md5);
    assert_eq!(
        c.opaque.as_deref(),
        Some("5ccc069c403ebaf9f0171e9517f40e41")
    );
    let a = c.respond(
        &DigestRequest::new("GET", "/dir/index.html"),
        "Mufasa",
        "Circle Of Life",
        "0a4f113b",
        1,
    );
    assert_eq!(a.response, "6629fae49393a05397450978507c4ef1");
    assert_eq!(a.qop, Some(Qop::Auth));
    assert_eq!(a.nc, Some(1));
}

fn rfc7616_challenge(alg: &str) -> Challenge {
    Challenge::parse(&format!(
        r#"Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm={alg},
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
    ))
    .unwrap()
}

#[test]
fn rfc7616_section_3_9_1_sha256_and_md5() {
    for (alg, expected) in [
        (
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ] {
        let c = rfc7616_challenge(alg);
        let a = c.respond(
            &DigestRequest::new("GET", "/dir/index.html"),
            "Mufasa",
            "Circle of Life",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        );
        assert_eq!(a.response, expected, "{alg}");
        assert_eq!(
            a.to_string(),
            format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", \
                 response=\"{expected}\", algorithm={alg}, \
                 cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", qop=auth, nc=00000001"
            )
        );
    }
}

#[test]
fn sip_invite_vectors_all_algorithms() {
    for (alg, nc1, nc2) in [
        (
            "MD5",
            "08bcdd9b45de0e061b35acffb31ae94d",
            "356c2d9b715e7521b4989f0a04d5ee67",
        ),
        (
            "SHA-256",
            "2486923dcca1fb1b0eca49bd2923e54d67b24ea37e7943eb0fb061bf93731b0c",
            "da0e2f777433876f980c35d33c8f7fce6ce2a961aa34614a432e9da4d550057b",
        ),
        (
            "MD5-sess",
            "9549a5f8dec068170a6e729d56544812",
            "33deec56dba46027f0ed22677674be62",
        ),
        (
            "SHA-256-sess",
            "a5cf7a9259d930b9db1a234b60174c0c5767e7d69f764004eca856c2bef4afb0",
            "f4add2195a61b0f5c17a3f533e6c1bf2fab05c3191339ee8152f5338af138ce3",
        ),
    ] {
        let c = Challenge::parse(&sip_challenge(alg)).unwrap();
        let a1 = c.respond(
            &DigestRequest::new("INVITE", SIP_URI),
            "dialbridge",
            "s3cr3t!",
            "6a1f2c3d",
            1,
        );
        let a2 = c.respond(
            &DigestRequest::new("INVITE", SIP_URI),
            "dialbridge",
            "s3cr3t!",
            "6a1f2c3d",
            2,
        );
        assert_eq!(a1.response, nc1, "{alg}");
        assert_eq!(a2.response, nc2, "{alg}");
        assert_eq!(a2.to_string().rsplit(", ").next(), Some("nc=00000002"));
    }
}

#[test]
fn sip_invite_vectors_sha512_256() {
    for (alg, expected) in [
        (
            "SHA-512-256",
            "f523c53d082d8408f83177a6d900b6b681d0eba8ad9984c42609679a9605977e",
        ),
        (
            "SHA-512-256-sess",
            "10f5320ba7da1f56f299dd7a37a42d3ea7272555d75475ac5286f2a7df390a59",
        ),
    ] {
        let c = Challenge::parse(&sip_challenge(alg)).unwrap();
        let a = c.respond(
            &DigestRequest::new("INVITE", SIP_URI),
            "dialbridge",
            "s3cr3t!",
            "6a1f2c3d",
            1,
        );
        assert_eq!(a.response, expected, "{alg}");
        assert_eq!(a.algorithm.map(|a| a.as_str()), Some(alg));
    }
}

#[test]
fn client_takes_header_values_from_any_iterator() {
    let values: Vec<String> = vec![sip_challenge("MD5"), sip_challenge("SHA-512-256")];
    let mut c = DigestClient::new("dialbridge", "s3cr3t!");
    let h = retry_headers(c.on_challenge(
        ChallengeKind::Www,
        values.iter().map(String::as_str),
        &DigestRequest::new("INVITE", SIP_URI),
        "6a1f2c3d",
    ));
    let a = Authorization::parse(&h[0].value).unwrap();
    assert_eq!(a.algorithm, Some(Algorithm::Sha512_256));
    assert_eq!(
        a.response,
        "f523c53d082d8408f83177a6d900b6b681d0eba8ad9984c42609679a9605977e"
    );
}

#[test]
fn sip_no_qop_rfc2069_style() {
    let c = Challenge::parse(r#"Digest realm="sip.example.net", nonce="4f8d2a1c9b7e""#).unwrap();
    assert!(c.qop.is_empty());
    let a = c.respond(
        &DigestRequest::new("INVITE", SIP_URI),
        "dialbridge",
        "s3cr3t!",
        "6a1f2c3d",
        1,
    );
    assert_eq!(a.response, "0022cf83f4bba30efdb1a1ffc12f6584");
    assert_eq!(
        a.to_string(),
        "Digest username=\"dialbridge\", realm=\"sip.example.net\", nonce=\"4f8d2a1c9b7e\", \
         uri=\"sip:+15551234567@trunk.example.com:5060;transport=tcp\", \
         response=\"0022cf83f4bba30efdb1a1ffc12f6584\", algorithm=MD5"
    );
}

#[test]
fn sip_auth_int_hashes_body() {
    let c = Challenge::parse(
        r#"Digest realm="sip.example.net", nonce="4f8d2a1c9b7e", algorithm=SHA-256, qop="auth-int""#,
    )
    .unwrap();
    let a = c.respond(
        &DigestRequest::new("INVITE", SIP_URI).with_body(b"v=0\r\n"),
        "dialbridge",
        "s3cr3t!",
        "6a1f2c3d",
        1,
    );
    assert_eq!(a.qop, Some(Qop::AuthInt));
    assert_eq!(
        a.response,
        "9c1d636813beaf78ee6abf8665abd72d4fbebc5fc076bb68a92018b8e3e794d1"
    );
    assert_eq!(a.verify("INVITE", "s3cr3t!", b"v=0\r\n"), Ok(()));
    assert_eq!(
        a.verify("INVITE", "s3cr3t!", b"v=1\r\n"),
        Err(AuthError::WrongResponse)
    );
}

#[test]
fn prefers_sha256_among_several_challenges() {
    let md5 = sip_challenge("MD5");
    let sha = sip_challenge("SHA-256");
    let c = select_challenge([md5.as_str(), sha.as_str()]).unwrap();
    assert_eq!(c.algorithm, Algorithm::Sha256);
    let c = select_challenge([sha.as_str(), md5.as_str()]).unwrap();
    assert_eq!(c.algorithm, Algorithm::Sha256);
    let sha512 = sip_challenge("SHA-512-256");
    let c = select_challenge([md5.as_str(), sha512.as_str(), sha.as_str()]).unwrap();
    assert_eq!(c.algorithm, Algorithm::Sha512_256);
    // Both in one header value.
    let both = format!("{md5}, {sha}");
    let c = select_challenge([both.as_str()]).unwrap();
    assert_eq!(c.algorithm, Algorithm::Sha256);
    // Unsupported ones are skipped.
    let c = select_challenge([
        r#"Digest realm="r", nonce="n", algorithm=SHA-512"#,
        r#"Basic realm="r""#,
        md5.as_str(),
    ])
    .unwrap();
    assert_eq!(c.algorithm, Algorithm::Md5);
    assert_eq!(
        select_challenge([r#"Digest realm="r", nonce="n", algorithm=AKAv1-MD5"#]),
        Err(AuthError::UnsupportedAlgorithm("AKAv1-MD5".into()))
    );
}

#[test]
fn parsing_oddities() {
    // Case, spacing, unquoted values, unknown params, stale, qop order and spaces.
    let c = Challenge::parse(
        "  digest   REALM = sip.example.net ,NONCE=\"a/b=c:d\",Algorithm=sha-256,\
         QOP=\" auth-int , auth \",stale=true,foo=bar,x-extra=\"q,uo\\\"ted\"",
    )
    .unwrap();
    assert_eq!(c.realm, "sip.example.net");
    assert_eq!(c.nonce, "a/b=c:d");
    assert_eq!(c.algorithm, Algorithm::Sha256);
    assert_eq!(c.qop, vec![Qop::AuthInt, Qop::Auth]);
    assert_eq!(c.preferred_qop(), Some(Qop::Auth));
    assert!(c.stale);
    // Escapes inside quoted strings.
    let c = Challenge::parse(r#"Digest realm="a \"b\" \\c", nonce="n""#).unwrap();
    assert_eq!(c.realm, r#"a "b" \c"#);
    assert_eq!(
        c.to_string(),
        r#"Digest realm="a \"b\" \\c", nonce="n", algorithm=MD5"#
    );
    // Missing comma between parameters is tolerated.
    let c = Challenge::parse(r#"Digest realm="r" nonce="n""#).unwrap();
    assert_eq!(c.nonce, "n");
    // Stale in any case; qop with unknown extras.
    let c =
        Challenge::parse(r#"Digest realm="r", nonce="n", stale=FALSE, qop="auth,x-y""#).unwrap();
    assert!(!c.stale);
    assert_eq!(c.qop, vec![Qop::Auth]);
}

#[test]
fn parse_errors_name_the_problem() {
    assert_eq!(Challenge::parse(""), Err(AuthError::Empty));
    assert_eq!(Challenge::parse("  ,  "), Err(AuthError::Empty));
    assert_eq!(
        Challenge::parse(r#"Basic realm="x""#),
        Err(AuthError::NotDigest("Basic".into()))
    );
    assert_eq!(
        Challenge::parse(r#"Digest nonce="n""#),
        Err(AuthError::MissingParam("realm"))
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r""#),
        Err(AuthError::MissingParam("nonce"))
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", nonce="n"#),
        Err(AuthError::Syntax {
            at: 24,
            expected: "closing quote"
        })
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", realm="s", nonce="n""#),
        Err(AuthError::DuplicateParam("realm".into()))
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-conf""#),
        Err(AuthError::UnsupportedQop("auth-conf".into()))
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", nonce="n", stale=maybe"#),
        Err(AuthError::InvalidParam {
            name: "stale",
            value: "maybe".into()
        })
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", nonce="n", algorithm="SHA-512""#),
        Err(AuthError::UnsupportedAlgorithm("SHA-512".into()))
    );
    assert_eq!(
        Challenge::parse(r#"Digest realm="r", =x"#),
        Err(AuthError::Syntax {
            at: 18,
            expected: "parameter name"
        })
    );
    assert_eq!(
        AuthError::MissingParam("nonce").to_string(),
        "digest parameter 'nonce' is missing"
    );
}

#[test]
fn server_round_trip_md5_and_sha256() {
    for alg in [Algorithm::Md5, Algorithm::Sha256] {
        let mut ch = Challenge::new("dialbridge", "c2VydmVyLW5vbmNl", alg);
        ch.opaque = Some("op1".into());
        let header = ch.to_string();
        assert_eq!(
            header,
            format!(
                "Digest realm=\"dialbridge\", nonce=\"c2VydmVyLW5vbmNl\", opaque=\"op1\", \
                 algorithm={alg}, qop=\"auth\""
            )
        );
        // The client parses what the server sent and answers it.
        let parsed = Challenge::parse(&header).unwrap();
        assert_eq!(parsed, ch);
        let creds = parsed
            .respond(
                &DigestRequest::new("INVITE", "sip:1000@192.0.2.10:5080"),
                "trunk-a",
                "pa55",
                "cn0",
                1,
            )
            .to_string();
        let authz = Authorization::parse(&creds).unwrap();
        assert_eq!(authz.username, "trunk-a");
        assert_eq!(authz.uri, "sip:1000@192.0.2.10:5080");
        assert_eq!(authz.nc, Some(1));
        assert_eq!(authz.algorithm, Some(alg));
        assert_eq!(authz.verify_against(&ch, "INVITE", "pa55", b""), Ok(()));
        assert_eq!(
            authz.verify_against(&ch, "INVITE", "wrong", b""),
            Err(AuthError::WrongResponse)
        );
        assert_eq!(
            authz.verify_against(&ch, "ACK", "pa55", b""),
            Err(AuthError::WrongResponse)
        );
        let other = Challenge::new("dialbridge", "other", alg);
        assert_eq!(
            authz.verify_against(&other, "INVITE", "pa55", b""),
            Err(AuthError::NonceMismatch)
        );
    }
}

#[test]
fn parse_authorization_from_a_uac() {
    // As sent by a typical UA: mixed case, unquoted algorithm/qop/nc, lowercase scheme.
    let a = Authorization::parse(
        "digest USERNAME=\"dialbridge\",realm=\"sip.example.net\",nonce=\"4f8d2a1c9b7e\",\
         uri=\"sip:+15551234567@trunk.example.com:5060;transport=tcp\",\
         response=\"2486923DCCA1FB1B0ECA49BD2923E54D67B24EA37E7943EB0FB061BF93731B0C\",\
         algorithm=SHA-256,cnonce=\"6a1f2c3d\",qop=auth,nc=00000001",
    )
    .unwrap();
    assert_eq!(a.nc, Some(1));
    assert_eq!(a.qop, Some(Qop::Auth));
    assert_eq!(a.verify("INVITE", "s3cr3t!", b""), Ok(()));
    let ch = Challenge::parse(&sip_challenge("SHA-256")).unwrap();
    assert_eq!(a.verify_against(&ch, "INVITE", "s3cr3t!", b""), Ok(()));

    assert_eq!(
        Authorization::parse(
            r#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="zz""#
        ),
        Err(AuthError::InvalidParam {
            name: "response",
            value: "zz".into()
        })
    );
    assert_eq!(
        Authorization::parse(
            r#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="00", qop=auth, cnonce="c""#
        ),
        Err(AuthError::MissingParam("nc"))
    );
    assert_eq!(
        Authorization::parse(
            r#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="00", qop=auth, nc=xyz, cnonce="c""#
        ),
        Err(AuthError::InvalidParam {
            name: "nc",
            value: "xyz".into()
        })
    );
    assert_eq!(
        Authorization::parse(r#"Digest realm="r", nonce="n", uri="sip:x", response="00""#),
        Err(AuthError::MissingParam("username"))
    );
}

fn retry_headers(d: RetryDecision) -> Vec<AuthHeader> {
    match d {
        RetryDecision::Retry(h) => h,
        RetryDecision::GiveUp(g) => panic!("unexpected give up: {g}"),
    }
}

#[test]
fn client_retries_once_then_gives_up_on_same_nonce() {
    let mut c = DigestClient::new("dialbridge", "s3cr3t!");
    let ch = sip_challenge("SHA-256");
    let h = retry_headers(c.on_challenge(
        ChallengeKind::Proxy,
        [ch.as_str()],
        &DigestRequest::new("INVITE", SIP_URI),
        "6a1f2c3d",
    ));
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].name, "Proxy-Authorization");
    let a = Authorization::parse(&h[0].value).unwrap();
    assert_eq!(
        a.response,
        "2486923dcca1fb1b0eca49bd2923e54d67b24ea37e7943eb0fb061bf93731b0c"
    );
    // Same nonce again, not stale: the password is wrong.
    assert_eq!(
        c.on_challenge(
            ChallengeKind::Proxy,
            [ch.as_str()],
            &DigestRequest::new("INVITE", SIP_URI),
            "6a1f2c3d"
        ),
        RetryDecision::GiveUp(GiveUp::CredentialsRejected {
            realm: "sip.example.net".into()
        })
    );
}

#[test]
fn client_retries_on_stale_and_new_nonce_with_a_cap() {
    let mut c = DigestClient::new("u", "p").with_max_rounds(3);
    let ch = |n: &str, stale: bool| {
        format!(
            r#"Digest realm="r", nonce="{n}", qop="auth"{}"#,
            if stale { ", stale=true" } else { "" }
        )
    };
    let first = ch("n1", false);
    assert!(matches!(
        c.on_challenge(
            ChallengeKind::Www,
            [first.as_str()],
            &DigestRequest::new("INVITE", "sip:a@b"),
            "c"
        ),
        RetryDecision::Retry(_)
    ));
    // Same nonce flagged stale: retry allowed.
    let stale = ch("n1", true);
    let h = retry_headers(c.on_challenge(
        ChallengeKind::Www,
        [stale.as_str()],
        &DigestRequest::new("INVITE", "sip:a@b"),
        "c",
    ));
    assert_eq!(h[0].name, "Authorization");
    // A fresh nonce each time is answered, but only up to the cap.
    let second = ch("n2", false);
    assert!(matches!(
        c.on_challenge(
            ChallengeKind::Www,
            [second.as_str()],
            &DigestRequest::new("INVITE", "sip:a@b"),
            "c"
        ),
        RetryDecision::Retry(_)
    ));
    let third = ch("n3", false);
    assert_eq!(
        c.on_challenge(
            ChallengeKind::Www,
            [third.as_str()],
            &DigestRequest::new("INVITE", "sip:a@b"),
            "c"
        ),
        RetryDecision::GiveUp(GiveUp::TooManyChallenges)
    );
}

#[test]
fn client_gives_up_on_unusable_challenge() {
    let mut c = DigestClient::new("u", "p");
    assert_eq!(
        c.on_challenge(
            ChallengeKind::Www,
            [r#"Basic realm="x""#],
            &DigestRequest::new("INVITE", "sip:a@b"),
            "c"
        ),
        RetryDecision::GiveUp(GiveUp::NoUsableChallenge(AuthError::NotDigest(
            "Basic".into()
        )))
    );
    assert_eq!(
        c.on_challenge(
            ChallengeKind::Www,
            std::iter::empty(),
            &DigestRequest::new("INVITE", "sip:a@b"),
            "c"
        ),
        RetryDecision::GiveUp(GiveUp::NoUsableChallenge(AuthError::Empty))
    );
}

#[test]
fn client_reuses_nonce_with_incrementing_nc_and_carries_both_kinds() {
    let mut c = DigestClient::new("dialbridge", "s3cr3t!");
    let proxy = sip_challenge("MD5");
    retry_headers(c.on_challenge(
        ChallengeKind::Proxy,
        [proxy.as_str()],
        &DigestRequest::new("INVITE", SIP_URI),
        "6a1f2c3d",
    ));
    // Then the far end challenges with 401 for another realm: both credentials go in the retry.
    let www = r#"Digest realm="far.example", nonce="abc", algorithm=SHA-256, qop="auth""#;
    let h = retry_headers(c.on_challenge(
        ChallengeKind::Www,
        [www],
        &DigestRequest::new("INVITE", SIP_URI),
        "6a1f2c3d",
    ));
    let names: Vec<&str> = h.iter().map(|h| h.name).collect();
    assert_eq!(names, vec!["Proxy-Authorization", "Authorization"]);
    let p = Authorization::parse(&h[0].value).unwrap();
    assert_eq!(p.nc, Some(2));
    assert_eq!(p.response, "356c2d9b715e7521b4989f0a04d5ee67");
    let w = Authorization::parse(&h[1].value).unwrap();
    assert_eq!(w.nc, Some(1));
    assert_eq!(w.realm, "far.example");
    c.on_success();
    // A later in-dialog BYE reuses the cached proxy nonce (nc=3 now).
    let h = c.authorize(
        &DigestRequest::new("BYE", "sip:+15551234567@198.51.100.7:5060"),
        "77aa88bb",
    );
    let p = Authorization::parse(&h[0].value).unwrap();
    assert_eq!(p.nc, Some(3));
    assert_eq!(p.uri, "sip:+15551234567@198.51.100.7:5060");
    assert_eq!(p.verify("BYE", "s3cr3t!", b""), Ok(()));
}

#[test]
fn client_bye_vector_independent() {
    let ch = Challenge::parse(&sip_challenge("MD5")).unwrap();
    let a = ch.respond(
        &DigestRequest::new("BYE", "sip:+15551234567@198.51.100.7:5060"),
        "dialbridge",
        "s3cr3t!",
        "77aa88bb",
        2,
    );
    assert_eq!(a.response, "a5aaa83db89aae5ef0cd53fd0ee476ed");
}

proptest! {
    #[test]
    fn challenge_parser_never_panics(s in ".{0,200}") {
        let _ = Challenge::parse(&s);
        let _ = Authorization::parse(&s);
        let _ = select_challenge([s.as_str()]);
    }

    #[test]
    fn challenge_parser_never_panics_on_digestish(s in "(Digest|digest|Basic)?[ ,=\"\\\\a-z0-9\\t]{0,120}") {
        let _ = Challenge::parse(&s);
        let _ = Authorization::parse(&s);
        let mut c = DigestClient::new("u", "p");
        let _ = c.on_challenge(ChallengeKind::Www, [s.as_str()], &DigestRequest::new("INVITE", "sip:a@b"), "c");
    }

    #[test]
    fn challenge_display_reparses(realm in "[ -~]{0,30}", nonce in "[ -~]{0,30}", sha in any::<bool>(), stale in any::<bool>()) {
        let mut ch = Challenge::new(realm, nonce, if sha { Algorithm::Sha256 } else { Algorithm::Md5 });
        ch.stale = stale;
        prop_assert_eq!(Challenge::parse(&ch.to_string()), Ok(ch));
    }
}

#[test]
fn client_answers_at_most_eight_realms_per_response() {
    let values: Vec<String> = (0..10)
        .map(|i| format!(r#"Digest realm="proxy{i}", nonce="n{i}""#))
        .collect();
    let mut c = DigestClient::new("u", "p");
    let h = retry_headers(c.on_challenge(
        ChallengeKind::Proxy,
        values.iter().map(String::as_str),
        &DigestRequest::new("INVITE", "sip:a@b"),
        "c",
    ));
    let realms: Vec<String> = h
        .iter()
        .map(|h| Authorization::parse(&h.value).unwrap().realm)
        .collect();
    assert_eq!(
        realms,
        (0..8).map(|i| format!("proxy{i}")).collect::<Vec<_>>()
    );
}
