module cordon/spawner

go 1.23
