module cordon/agent

go 1.23
