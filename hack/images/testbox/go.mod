module hone.local/images/testbox

go 1.24.0
