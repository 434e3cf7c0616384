module envroll.dev/e2e/chaos/faultproxy

go 1.26
